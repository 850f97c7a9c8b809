"""Entitlements as buildx's --allow: RUN --network=host and RUN --security=insecure only when granted."""
from __future__ import annotations

import pytest

import grammar
from builder.errors import PybuildError, UsageError
from builder.plan.bases import SCRATCH
from builder.plan.entitle import parse_allow
from builder.plan.keys import step_key
from builder.plan.planner import plan


def planned(text: str, **kwargs):
    df = grammar.parse(text, filename="Dockerfile")
    return plan(df, build_args={}, target=None, resolve_image=lambda ref: SCRATCH, **kwargs)


@pytest.mark.parametrize("flag, entitlement", [("--network=host", "network.host"),
                                               ("--security=insecure", "security.insecure")])
def test_a_run_asking_for_an_entitlement_fails_without_it(flag, entitlement):
    with pytest.raises(PybuildError) as info:
        planned(f"FROM scratch\nRUN true\nRUN {flag} echo hi\n")
    exc = info.value
    assert exc.message.startswith("Dockerfile:3:5: ") and entitlement in exc.message
    assert f"--allow {entitlement}" in exc.hint and exc.reference == "entitlement-required"
    assert "RUN " + flag in exc.context


def test_granted_entitlements_reach_the_exec_op_and_its_key():
    graph = planned("FROM scratch\nRUN --security=insecure --network=host true\n",
                    entitlements=frozenset({"security.insecure", "network.host"}))
    op = graph.steps[-1].op
    assert op.insecure and op.network == "host"
    plain = planned("FROM scratch\nRUN --network=host true\n", entitlements=frozenset({"network.host"}))
    assert not plain.steps[-1].op.insecure
    assert step_key(graph.steps[-1], None).digest != step_key(plain.steps[-1], None).digest
    assert "--security=insecure" in graph.steps[-1].created_by


def test_the_operators_network_host_is_its_entitlement():
    graph = planned("FROM scratch\nRUN --network=host true\nRUN true\n", network="host")
    assert [s.op.network for s in graph.steps] == ["host", "host"]
    assert parse_allow([], "host") == frozenset({"network.host"})
    with pytest.raises(PybuildError, match="security.insecure"):
        planned("FROM scratch\nRUN --security=insecure true\n", network="host")


def test_network_none_and_sandbox_need_nothing():
    graph = planned("FROM scratch\nRUN --network=none --security=sandbox true\n")
    assert graph.steps[-1].op.network == "none" and not graph.steps[-1].op.insecure


def test_allow_takes_repeats_and_comma_lists_and_refuses_unknown_names():
    assert parse_allow(["network.host", "security.insecure"]) == {"network.host", "security.insecure"}
    assert parse_allow(["network.host,security.insecure"]) == {"network.host", "security.insecure"}
    with pytest.raises(UsageError, match="unknown entitlement") as info:
        parse_allow(["device"])
    assert "network.host" in info.value.hint


@pytest.mark.parametrize("argv, words", [(["--build-arg", "=1"], "--build-arg '=1': the name is empty"),
                                         (["--allow", "device"], "--allow device: unknown entitlement"),
                                         (["--build-context", "x"], "--build-context 'x': expected NAME=SOURCE")])
def test_bad_operator_flags_are_usage_errors(tmp_path, capsys, argv, words):
    from builder.cli import main

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    assert main(["build", "--root", str(tmp_path / "store"), *argv, str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {words}") and "hint: " in err and "Traceback" not in err
