"""SOURCE_DATE_EPOCH is read and validated once (builder/options.py) and passed down: keys, layer times, config
and history times all see the same value, " 1700000000" included; a bad value is one clear usage error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import grammar
from builder.build import BuildOptions
from builder.errors import UsageError
from builder.export.image import assemble
from builder.options import source_date_epoch
from builder.plan.bases import SCRATCH
from builder.plan.keys import step_key
from builder.plan.planner import plan
from builder.plan.steps import ExecOp, SourceOp, Step

EPOCH = 1700000000
REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("value", ["1700000000", " 1700000000", "1700000000\n", "+1700000000"])
def test_spaces_and_sign_read_the_same(value):
    assert source_date_epoch({"SOURCE_DATE_EPOCH": value}) == EPOCH


@pytest.mark.parametrize("env", [{}, {"SOURCE_DATE_EPOCH": ""}, {"SOURCE_DATE_EPOCH": "  "}])
def test_unset_or_empty_means_no_clamping(env):
    assert source_date_epoch(env) is None


@pytest.mark.parametrize("value", ["yesterday", "1.5", "-5", "17e8", "0x10"])
def test_bad_value_is_a_usage_error(value):
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH") as info:
        source_date_epoch({"SOURCE_DATE_EPOCH": value})
    assert info.value.hint


def test_build_options_read_the_environment_once(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", " 1700000000")
    opts = BuildOptions(context=".")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "5")
    assert opts.source_date_epoch == EPOCH
    assert BuildOptions(context=".", source_date_epoch=None).source_date_epoch is None
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(UsageError):
        BuildOptions(context=".")


def test_keys_take_the_epoch_as_an_argument_not_from_the_environment(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    run = Step(0, 0, "exec", ExecOp(("true",), (), "/", ""), None, "RUN true")
    plain = step_key(run, None)
    clamped = step_key(run, None, epoch=EPOCH)
    assert plain.digest != clamped.digest and clamped.parts["source_date_epoch"] == str(EPOCH)
    assert "source_date_epoch" not in plain.parts
    source = Step(0, 0, "source", SourceOp("a", "sha256:" + "0" * 64, ()), None, "FROM a")
    assert step_key(source, None).digest == step_key(source, None, epoch=EPOCH).digest  # pulled bytes stay


def test_config_and_history_times_are_the_epoch():
    graph = plan(grammar.parse("FROM scratch\nENV A=1\nLABEL b=2\n", filename="Dockerfile"), build_args={},
                 target=None, resolve_image=lambda ref: SCRATCH)
    config = json.loads(assemble(graph, 0, {}, epoch=EPOCH)[0])
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert [h["created"] for h in config["history"]] == ["2023-11-14T22:13:20Z"] * 2
    assert json.loads(assemble(graph, 0, {})[0])["created"] != "2023-11-14T22:13:20Z"


def test_the_cli_reports_a_bad_value_once_without_a_traceback(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "yesterday"}
    done = subprocess.run([sys.executable, "-m", "builder", "build", "--root", str(tmp_path / "store"),
                           str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 1
    assert "SOURCE_DATE_EPOCH='yesterday' is not a whole number" in done.stderr and "hint:" in done.stderr
    assert "Traceback" not in done.stderr
