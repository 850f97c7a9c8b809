"""The file-op helper's entry point (builder/ops/fileop.py main) as a build runs it, on a real overlay of a tmp
store's snapshot, but in a thread of this process: unshare(CLONE_NEWNS) moves only the calling thread, so its
mounts live in a namespace of its own and vanish when the thread ends. What it wrote is read from the upper dir;
a failure is the one JSON line the parent turns into the step's error."""
from __future__ import annotations

import io
import json
import sys
import threading

import pytest

from builder.ops import fileop
from cache import Store
from tests.integration.conftest import mountinfo


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


def helper(spec: dict, monkeypatch) -> tuple[int, dict | None]:
    """Run main() on ``spec`` in a thread of its own; (exit status, the JSON it printed or None)."""
    out = io.StringIO()
    status: list[int] = []
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(spec)))
    monkeypatch.setattr(sys, "stdout", out)
    thread = threading.Thread(target=lambda: status.append(fileop.main()))
    thread.start()
    thread.join()
    monkeypatch.undo()
    return status[0], (json.loads(out.getvalue()) if out.getvalue() else None)


def spec_for(store, mutable, tmp_path, ops: list[dict], **extra) -> dict:
    points = [tmp_path / "mnt-root", tmp_path / "mnt-src"]
    for point in points:
        point.mkdir(exist_ok=True)
    return {"lowerdirs": [str(p) for p in mutable.lowerdirs], "upper": str(mutable.upper),
            "work": str(mutable.work), "mountpoints": [str(p) for p in points], **extra, "ops": ops}


def test_copy_mkdir_and_dockerignore_on_the_steps_overlay(store, tmp_path, monkeypatch):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "app.py").write_text("print()")
    (context / "secret.env").write_text("x")
    mutable = store.prepare(None)
    before = mountinfo(tmp_path)
    try:
        ops = [{"op": "mkdir", "path": "/work/dir", "chown": "nobody"},  # unknown user: 0, as a WORKDIR
               {"op": "copy", "sources": ["."], "dest": "/app/", "kind": "context", "chown": "7:8"}]
        status, said = helper(spec_for(store, mutable, tmp_path, ops, context=str(context), ignore=["*.env"]),
                              monkeypatch)
        assert (status, said) == (0, None)
        upper = mutable.upper
        assert (upper / "work" / "dir").is_dir() and (upper / "work" / "dir").stat().st_uid == 0
        assert sorted(p.name for p in (upper / "app").iterdir()) == ["app.py"]  # .dockerignore kept secret.env out
        assert ((upper / "app" / "app.py").stat().st_uid, (upper / "app" / "app.py").stat().st_gid) == (7, 8)
    finally:
        store.abort(mutable)
    assert mountinfo(tmp_path) == before  # the overlay went with the thread's namespace


def test_copy_from_a_stage_reads_its_layers_read_only(store, tmp_path, monkeypatch):
    stage = store.prepare(None)
    (stage.upper / "built").mkdir()
    (stage.upper / "built" / "bin").write_text("binary")
    snapshot, _ = store.commit(stage)
    mutable = store.prepare(None)
    try:
        ops = [{"op": "copy", "sources": ["/built/bin"], "dest": "/usr/bin/tool", "kind": "stage"}]
        spec = spec_for(store, mutable, tmp_path, ops, source_lowerdirs=[str(p) for p in store.lowerdirs(snapshot)])
        assert helper(spec, monkeypatch) == (0, None)
        assert (mutable.upper / "usr" / "bin" / "tool").read_text() == "binary"
    finally:
        store.abort(mutable)


def test_a_failure_is_one_json_error_and_exit_status_2(store, tmp_path, monkeypatch):
    context = tmp_path / "ctx"
    context.mkdir()
    mutable = store.prepare(None)
    try:
        missing = [{"op": "copy", "sources": ["nope.txt"], "dest": "/x", "kind": "context"}]
        assert helper(spec_for(store, mutable, tmp_path, missing, context=str(context)), monkeypatch) == \
            (2, {"error": "source 'nope.txt' not found in the build context"})
        (context / "d").mkdir()
        (context / "d" / "f").write_text("f")
        unreadable = [{"op": "copy", "sources": ["d"], "dest": "/d", "kind": "context"}]
        spec = spec_for(store, mutable, tmp_path, unreadable, context=str(context))
        spec["upper"] = str(tmp_path / "no-such-upper")  # the overlay cannot be mounted
        status, said = helper(spec, monkeypatch)
        assert status == 2 and said["error"].startswith("mount overlay overlay on ")
        assert "No such file or directory" in said["error"]
    finally:
        store.abort(mutable)


def test_a_plain_directory_is_written_in_place(tmp_path, monkeypatch):
    """A cache mount being seeded from a stage: `root_dir` is bind-mounted and written directly."""
    target = tmp_path / "cachedir"
    target.mkdir()
    points = [tmp_path / "r", tmp_path / "s"]
    for point in points:
        point.mkdir()
    spec = {"root_dir": str(target), "mountpoints": [str(p) for p in points],
            "ops": [{"op": "write", "dest": "/seeded", "content": "yes"}]}
    assert helper(spec, monkeypatch) == (0, None)
    assert (target / "seeded").read_text() == "yes"


def test_the_steps_overlay_is_volatile_and_its_work_dir_can_be_mounted_again(store, tmp_path, monkeypatch):
    """volatile, as a RUN's root: no syncfs of the store's filesystem when the helper's namespace drops the overlay
    (the commit syncs the snapshot, cache.durable); the kernel's marker in the work dir is cleared for a second
    mount of the same upper (the kernel would refuse it)."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a").write_text("a")
    mutable = store.prepare(None)
    try:
        for name in ("first", "second"):
            ops = [{"op": "copy", "sources": ["a"], "dest": f"/{name}", "kind": "context"}]
            assert helper(spec_for(store, mutable, tmp_path, ops, context=str(context)), monkeypatch) == (0, None)
            assert (mutable.work / "work" / "incompat" / "volatile").is_dir()
        assert sorted(p.name for p in mutable.upper.iterdir()) == ["first", "second"]
    finally:
        store.abort(mutable)
