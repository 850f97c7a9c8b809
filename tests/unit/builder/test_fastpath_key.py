"""builder/fastpath.py: which builds may be memoised, and what the key covers."""
from __future__ import annotations

import argparse
import os

from builder import fastpath
from builder.cli import _defaults, build_parser


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_only_plain_local_builds_qualify(tmp_path):
    ctx = str(tmp_path)
    assert fastpath.qualifies(args("-t", "a", "--build-arg", "A=1", "--iidfile", "f", "--jobs", "3", ctx),
                              _defaults())
    for extra in (["--push"], ["--pull"], ["-o", "type=oci,dest=x"], ["--no-cache"], ["--check"],
                  ["--secret", "id=a,src=b"], ["--metadata-file", "m"], ["--no-cache-filter", "s"]):
        assert not fastpath.qualifies(args(*extra, ctx), _defaults()), extra
    assert not fastpath.qualifies(args("-", "-f", "x"), _defaults())
    assert not fastpath.qualifies(args(str(tmp_path / "missing")), _defaults())


def test_a_flag_the_memo_does_not_know_disqualifies(tmp_path):
    ns = args(str(tmp_path))
    ns.cache_to = ["type=local,dest=x"]  # e.g. a flag added later by another feature
    assert not fastpath.qualifies(ns, _defaults())
    ns.cache_to = []
    assert fastpath.qualifies(ns, _defaults())


def test_the_key_covers_flags_dockerfile_and_ignore_file_but_not_progress(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    key = lambda *a: fastpath.memo_for(args(*a, str(tmp_path)), {}, {}).key  # noqa: E731
    base = key()
    assert key("--progress", "plain") == base == key("--iidfile", "x") == key("-q")
    assert key("-t", "other") != base and key("--target", "s") != base and key("--network", "host") != base
    (tmp_path / "Dockerfile").write_text("FROM scratch\nLABEL a=b\n")
    changed = key()
    assert changed != base
    (tmp_path / ".dockerignore").write_text("x\n")
    ignored = key()
    assert ignored != changed
    os.environ["SOURCE_DATE_EPOCH"] = "1"
    try:
        assert key() != ignored
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]


def test_at_most_keep_memos_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(fastpath, "KEEP", 3)
    for i in range(5):
        memo = fastpath.Memo(str(tmp_path), f"{i:064x}", str(tmp_path))
        memo._write({"context": None})
        os.utime(memo.path, ns=(i * 10**9, i * 10**9))
    assert sorted(os.listdir(tmp_path / "fastpath")) == [f"{i:064x}.json" for i in (2, 3, 4)]


def test_a_symlinked_dockerfile_or_ignore_file_or_memo_directory_is_not_memoised(tmp_path):
    """The build reads them confined to their own directory, where a link means something else than to the OS,
    so the memo's key could not hash what the build read (a stale replay was shown by a hostile test)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (tmp_path / "real").write_text("FROM scratch\n")
    (ctx / "Dockerfile").symlink_to(tmp_path / "real")
    assert not fastpath.qualifies(args("--root", str(tmp_path / "root"), str(ctx)), _defaults())
    (ctx / "Dockerfile").unlink()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    assert fastpath.qualifies(args("--root", str(tmp_path / "root"), str(ctx)), _defaults())
    (ctx / ".dockerignore").symlink_to(tmp_path / "real")
    assert not fastpath.qualifies(args("--root", str(tmp_path / "root"), str(ctx)), _defaults())
    (ctx / ".dockerignore").unlink()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "fastpath").symlink_to(tmp_path)
    assert not fastpath.qualifies(args("--root", str(tmp_path / "root"), str(ctx)), _defaults())


def test_a_memo_with_damaged_events_takes_the_full_path():
    assert fastpath._events_ok([{"type": "StepStarted"}, {"type": "StepCached"}])
    assert not fastpath._events_ok([1]) and not fastpath._events_ok([{"type": "Bogus"}]) \
        and not fastpath._events_ok("x")


def test_a_step_that_ran_keeps_the_build_from_being_memoised(tmp_path):
    from builder.progress import events as ev

    seen: list[object] = []
    memo = fastpath.Memo(str(tmp_path), "0" * 64, str(tmp_path))
    observed = memo.observe(seen.append)
    observed(ev.StepStarted(1, "[1/2] FROM busybox"))
    observed(ev.StepCached(1))
    assert memo.cached and [e["type"] for e in memo.events] == ["StepStarted", "StepCached"]
    observed(ev.StepStarted(2, "[2/2] RUN true"))
    observed(ev.StepLog(2, "stdout", "hi\n"))
    observed(ev.StepDone(2, 0.1))
    assert not memo.cached, "a replay would show the step running instead of CACHED"
    assert len(seen) == 5
