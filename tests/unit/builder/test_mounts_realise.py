"""More of RUN --mount from plan to sandbox (builder/ops/mounts.py; see test_mounts_contract.py): tmpfs sizes,
a heredoc script's file, ssh agent sockets and $SSH_AUTH_SOCK, binds from a stage (rw over a throw-away upper),
binds that see only what .dockerignore keeps, cache mounts seeded from a stage, and a mount that cannot be set
up failing its RUN with the instruction's location (builder/ops/exec.py) before anything runs."""
from __future__ import annotations

import os
import socket
import stat
from contextlib import ExitStack

import pytest

import grammar
from builder.context.dockerignore import PatternMatcher
from builder.errors import BuildStepError, PybuildError
from builder.ops import exec as exec_op
from builder.ops.mounts import MountSources, mount_key_parts, realise, run_env, ssh_env
from builder.plan.bases import SCRATCH
from builder.plan.planner import plan
from builder.sandbox.spec import Resources
from tests.unit.builder.test_mounts_contract import context, realised, run_step, store  # noqa: F401

TWO_STAGES = "FROM scratch AS st\nCOPY a /a\nFROM scratch\nRUN {flags} true\n"


def final_step(text: str):
    graph = plan(grammar.parse(text, filename="Dockerfile"), build_args={}, target=None,
                 resolve_image=lambda ref: SCRATCH, network="none")
    return graph.steps[-1]


def stage_snapshot(store, files: dict[str, str]):  # noqa: F811
    """A committed snapshot holding ``files`` (what an earlier stage built)."""
    mutable = store.prepare(None)
    for name, text in files.items():
        path = mutable.upper / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return store.commit(mutable)[0]


def test_tmpfs_mounts_carry_their_size(context, store):  # noqa: F811
    with ExitStack() as stack:
        (mount,) = realised(run_step("--mount=type=tmpfs,target=/t,size=64m"), store, context, stack)
        (plain,) = realised(run_step("--mount=type=tmpfs,target=/u"), store, context, stack)
    assert (mount.type, mount.target, mount.options) == ("tmpfs", "/t", ("size=64m",)) and plain.options == ()


def test_a_heredoc_script_is_a_0755_file_whose_text_is_in_the_key(context, store):  # noqa: F811
    step = final_step("FROM scratch\nRUN <<EOT\n#!/bin/sh\necho hi\nEOT\n")
    (part,) = mount_key_parts(step, str(context), None, store.file_digests, {})
    assert part["content"] == "#!/bin/sh\necho hi\n"
    with ExitStack() as stack:
        (mount,) = realised(step, store, context, stack)
        script = os.path.join(mount.source, "EOT")
        assert open(script).read() == "#!/bin/sh\necho hi\n" and stat.S_IMODE(os.stat(script).st_mode) == 0o755
        assert mount.readonly and step.op.argv[-1] == f"{mount.target}/EOT"
    assert not os.path.exists(mount.source)


def test_ssh_mounts_get_a_proxy_socket_and_the_first_is_ssh_auth_sock(context, store, tmp_path):  # noqa: F811
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(str(tmp_path / "agent.sock"))
    try:
        step = run_step("--mount=type=ssh,mode=0660 --mount=type=ssh,id=other")
        sources = MountSources(store=store, context_dir=str(context), secrets={},
                               ssh={"default": str(tmp_path / "agent.sock")})
        with ExitStack() as stack:
            (mount,) = realise(step.op, sources, stack)  # `other` was not given and is optional: left out
            assert stat.S_ISSOCK(os.stat(mount.source).st_mode) and mount.source != str(tmp_path / "agent.sock")
            assert stat.S_IMODE(os.stat(mount.source).st_mode) == 0o660
            assert f"SSH_AUTH_SOCK={mount.target}" in ssh_env(step.op, sources)
        assert not os.path.exists(mount.source)
        with ExitStack() as stack, pytest.raises(PybuildError, match="ssh agent 'k' is required") as info:
            realise(run_step("--mount=type=ssh,id=k,required").op, sources, stack)
        assert "--ssh k" in info.value.hint
    finally:
        agent.close()


def test_a_bind_from_a_stage_is_its_layers_and_rw_writes_go_to_a_throw_away_upper(context, store):  # noqa: F811
    snapshot = stage_snapshot(store, {"built/out": "o"})
    ro = final_step(TWO_STAGES.format(flags="--mount=type=bind,from=st,source=/built,target=/m"))
    rw = final_step(TWO_STAGES.format(flags="--mount=type=bind,from=st,target=/m,rw"))
    sources = MountSources(store=store, context_dir=str(context), secrets={},
                           snapshots={ro.op.mounts[0].from_step: snapshot})
    with ExitStack() as stack:
        (read_only,) = realise(ro.op, sources, stack)
        (writable,) = realise(rw.op, sources, stack)
        assert (read_only.type, read_only.source, read_only.readonly) == ("overlay", "/built", True)
        assert read_only.lowerdirs == tuple(str(p) for p in store.lowerdirs(snapshot)) and read_only.upperdir is None
        assert os.path.isdir(writable.upperdir) and os.path.isdir(writable.workdir) and not writable.readonly
        upper = writable.upperdir
    assert not os.path.exists(upper)


def test_a_bind_of_the_context_sees_only_what_dockerignore_keeps(context, store):  # noqa: F811
    (context / "src" / "secret.env").write_text("x")
    excluded = PatternMatcher(["**/*.env", "req.txt"]).matches
    with ExitStack() as stack:
        (mount,) = realised(run_step("--mount=type=bind,source=src,target=/s"), store, context, stack,
                            excluded=excluded)
        assert sorted(os.listdir(mount.source)) == ["a.txt"]
        with pytest.raises(PybuildError, match="bind mount source 'req.txt' not found") as info:
            realised(run_step("--mount=type=bind,source=req.txt,target=/r"), store, context, stack,
                     excluded=excluded)
        assert ".dockerignore" in info.value.hint


def test_a_rw_bind_of_a_file_is_a_copy_and_a_bind_needs_a_context(context, store):  # noqa: F811
    step = run_step("--mount=type=bind,source=req.txt,target=/r,rw")
    with ExitStack() as stack:
        (mount,) = realised(step, store, context, stack)
        assert mount.source != str(context / "req.txt") and open(mount.source).read() == "lark\n"
        with pytest.raises(PybuildError, match="a bind mount needs a build context"):
            realise(step.op, MountSources(store=store, context_dir=None, secrets={}), stack)


@pytest.mark.skipif(os.geteuid() != 0, reason="the file-op helper mounts the stage (needs root)")
def test_a_cache_mount_from_a_stage_starts_as_a_copy_of_its_directory(context, store):  # noqa: F811
    snapshot = stage_snapshot(store, {"data/seed.txt": "seed"})
    step = final_step(TWO_STAGES.format(flags="--mount=type=cache,target=/c,from=st,source=/data,id=seeded"))
    sources = MountSources(store=store, context_dir=str(context), secrets={},
                           snapshots={step.op.mounts[0].from_step: snapshot})
    with ExitStack() as stack:
        (mount,) = realise(step.op, sources, stack)
        assert open(os.path.join(mount.source, "seed.txt")).read() == "seed"
        (plain,) = realised(run_step("--mount=type=cache,target=/c,id=seeded"), store, context, stack)
        assert plain.source != mount.source  # another cache: the base is part of its identity


def test_a_required_env_secret_that_is_missing_fails_the_run_at_its_line(context, store):  # noqa: F811
    step = run_step("--mount=type=secret,id=tok,env=TOK,required")
    assert run_env(run_step("--mount=type=secret,id=tok,env=TOK").op, None) == step.op.env  # optional: left out
    with pytest.raises(BuildStepError) as info:
        exec_op.execute(store, step, None, compression="gzip", log=lambda stream, text: None, cancel=None,
                        dockerfile_lines=["FROM scratch", "RUN --mount=type=secret,id=tok,env=TOK,required true"],
                        hostname="h", mounts=MountSources(store=store, context_dir=str(context), secrets={}))
    assert info.value.message.startswith("Dockerfile:2:1: RUN") and "secret 'tok' is required" in info.value.message
    assert info.value.context == "    2 | RUN --mount=type=secret,id=tok,env=TOK,required true"


def test_host_gateway_without_the_bridge_is_an_error_naming_the_flag(store):  # noqa: F811
    step = run_step("--network=none")
    with pytest.raises(BuildStepError) as info:
        exec_op.execute(store, step, None, compression="gzip", log=lambda stream, text: None, cancel=None,
                        dockerfile_lines=None, hostname="h", extra_hosts=(("gw", "host-gateway"),))
    assert "--add-host NAME:host-gateway needs the bridge network" in info.value.message
    assert "give the address instead of host-gateway" in info.value.hint and "--network none|host" in info.value.hint
    assert info.value.context == step.created_by  # no Dockerfile text: the instruction


def test_limit_messages_name_the_limit_and_its_flag():
    assert exec_op.limit_message("pids", Resources(pids_limit=64)) == \
        "the RUN reached its process limit of 64 (--pids-limit): a fork was refused"
    assert exec_op.limit_message("memory", Resources(memory=256 << 20)) == \
        "the RUN ran out of memory (--memory 256m): the kernel killed a process"
    assert "(--memory 1000000 bytes)" in exec_op.limit_message("memory", Resources(memory=1000000))
    assert "--pids-limit N" in exec_op.LIMIT_HINTS["pids"] and "--memory SIZE" in exec_op.LIMIT_HINTS["memory"]
