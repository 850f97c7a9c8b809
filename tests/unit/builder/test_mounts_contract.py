"""RUN --mount from plan to what the sandbox gets, without running anything: which inputs enter the key
(contents of bind sources, never cache contents or secret values), what `realise` hands the sandbox (paths,
modes, throw-away copies for rw binds and secrets, the shared/locked/private cache dirs) and the environment
(`env=` secrets), on a real tmp cache.Store."""
from __future__ import annotations

import os
import stat
from contextlib import ExitStack

import pytest

import grammar
from builder.errors import PybuildError
from builder.ops.mounts import MountSources, mount_key_parts, read_secret_flag, realise, run_env
from builder.plan.bases import SCRATCH
from builder.plan.planner import plan
from builder.plan.steps import ExecOp, Step
from cache import Store


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def context(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "a.txt").write_text("one")
    (ctx / "req.txt").write_text("lark\n")
    return ctx


def run_step(flags: str) -> Step:
    graph = plan(grammar.parse(f"FROM scratch\nRUN {flags} true\n", filename="Dockerfile"), build_args={},
                 target=None, resolve_image=lambda ref: SCRATCH, network="none")
    return graph.steps[-1]


def key_parts(step: Step, context, store) -> list:
    return mount_key_parts(step, str(context), None, store.file_digests, {})


def test_bind_contents_enter_the_key_and_change_with_the_file(context, store):
    step = run_step("--mount=type=bind,source=src,target=/s")
    before = key_parts(step, context, store)
    (context / "src" / "a.txt").write_text("two")
    after = key_parts(step, context, store)
    assert before != after and before[0]["source"] == "src" and before[0]["readonly"] is True


def test_cache_and_secret_mounts_key_their_id_never_their_contents(context, store):
    step = run_step("--mount=type=cache,target=/c,id=pip --mount=type=secret,id=tok,env=TOK")
    parts = key_parts(step, context, store)
    assert [(p["type"], p["id"]) for p in parts] == [("cache", "pip"), ("secret", "tok")]
    assert parts[1]["env"] == "TOK" and "content" not in parts[0] and "content" not in parts[1]


def test_no_mounts_no_parts(context, store):
    assert key_parts(run_step("--network=none"), context, store) == []


def realised(step: Step, store, context, stack, **sources):
    assert isinstance(step.op, ExecOp)
    return realise(step.op, MountSources(store=store, context_dir=str(context), **{"secrets": {}, **sources}),
                   stack)


def test_a_read_only_bind_is_the_context_path_and_rw_a_throw_away_copy(context, store):
    with ExitStack() as stack:
        (ro,) = realised(run_step("--mount=type=bind,source=src,target=/s"), store, context, stack)
        (rw,) = realised(run_step("--mount=type=bind,source=src,target=/s,rw"), store, context, stack)
        assert ro.source == str(context / "src") and ro.readonly
        assert rw.source != ro.source and not rw.readonly and os.listdir(rw.source) == ["a.txt"]
        copy = rw.source
    assert not os.path.exists(copy)  # gone with the step


def test_a_missing_bind_source_is_an_error(context, store):
    with ExitStack() as stack, pytest.raises(PybuildError, match="not found in the build context"):
        realised(run_step("--mount=type=bind,source=nope,target=/n"), store, context, stack)


def test_cache_dirs_persist_per_id_in_the_store(context, store):
    step = run_step("--mount=type=cache,target=/c,id=pip,sharing=locked")
    with ExitStack() as stack:
        (first,) = realised(step, store, context, stack)
        open(os.path.join(first.source, "kept"), "w").close()
    with ExitStack() as stack:
        (again,) = realised(step, store, context, stack)
        (other,) = realised(run_step("--mount=type=cache,target=/c,id=npm"), store, context, stack)
    assert again.source == first.source and os.path.exists(os.path.join(again.source, "kept"))
    assert other.source != first.source and str(store.root) in first.source


def test_a_busy_private_cache_gives_the_second_user_a_fresh_dir(context, store):
    step = run_step("--mount=type=cache,target=/c,id=p,sharing=private")
    with ExitStack() as stack:
        (first,) = realised(step, store, context, stack)
        (second,) = realised(step, store, context, stack)
        assert first.source != second.source
        fresh = second.source
    assert not os.path.exists(fresh)


def test_secrets_are_private_copies_and_optional_unless_required(context, store, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    step = run_step("--mount=type=secret,id=tok,target=/run/t,mode=0440")
    with ExitStack() as stack:
        (mount,) = realised(step, store, context, stack, secrets={"tok": str(secret)})
        assert mount.readonly and mount.source != str(secret)
        assert stat.S_IMODE(os.stat(mount.source).st_mode) == 0o440 and open(mount.source).read() == "s3cret"
        assert realised(step, store, context, stack) == ()  # not given, not required: left out
    with ExitStack() as stack, pytest.raises(PybuildError, match="required"):
        realised(run_step("--mount=type=secret,id=tok,required"), store, context, stack)


def test_env_secrets_reach_only_the_run_environment(context, store, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    step = run_step("--mount=type=secret,id=tok,env=TOK")
    sources = MountSources(store=store, context_dir=str(context), secrets={"tok": str(secret)})
    assert "TOK=s3cret" in run_env(step.op, sources)
    assert not any(e.startswith("TOK=") for e in step.op.env)  # the planned op (keys, history) never has it
    secret.write_text("a\0b")
    with pytest.raises(PybuildError, match="NUL"):
        run_env(step.op, sources)


def test_secret_flags_from_a_file_or_the_environment(tmp_path, monkeypatch):
    secret = tmp_path / "f"
    secret.write_text("x")
    assert read_secret_flag(f"id=a,src={secret}", str(tmp_path)) == ("a", str(secret))
    monkeypatch.setenv("MY_TOKEN", "from-env")
    work = tmp_path / "work"
    work.mkdir()
    sid, path = read_secret_flag("id=b,env=MY_TOKEN", str(work))
    assert sid == "b" and open(path).read() == "from-env" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for bad in ("src=x", "id=c,src=/no/such/file", "id=NOT_SET_ANYWHERE_42"):
        with pytest.raises(PybuildError):
            read_secret_flag(bad, str(work))
