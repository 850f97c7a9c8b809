"""Cache index: record/lookup, usage counters, and locks across processes and threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cache import LockTimeout, Store, StoreError

from .helpers import commit_tree

REPO = Path(__file__).resolve().parents[3]


def test_record_then_lookup(store):
    snap, layer = commit_tree(store, [("file", "f", b"hello")])
    desc = {"instruction": "RUN echo hello > /f", "stage": "build", "inputs": ["sha256:aa", 1]}
    rec = store.record("k1", parent_key=None, snapshot=snap, layer=layer, description=desc)
    assert (rec.key, rec.parent_key, rec.snapshot_id, rec.layer, rec.description, rec.uses) == (
        "k1", None, snap.id, layer, desc, 0)
    assert rec.size == snap.size + layer.blob.size
    hit = store.lookup("k1")
    assert hit is not None and hit.uses == 1 and hit.last_used >= rec.last_used
    assert store.lookup("k1").uses == 2
    assert store.lookup("missing") is None
    assert [r.key for r in store.records()] == ["k1"]


def test_metadata_only_record_and_replacement(store):
    rec = store.record("meta", parent_key="k0", snapshot=None, layer=None, description={})
    assert rec.snapshot_id is None and rec.layer is None and rec.size == 0
    snap, layer = commit_tree(store, [("file", "f", b"x")])
    again = store.record("meta", parent_key="k0", snapshot=snap, layer=layer, description={"v": 2})
    assert again.snapshot_id == snap.id and again.description == {"v": 2}
    assert again.created == rec.created
    assert len(store.records()) == 1


def test_description_must_be_json(store):
    with pytest.raises(StoreError, match="not JSON-able"):
        store.record("k", parent_key=None, snapshot=None, layer=None, description={"x": object()})


def test_lookup_drops_records_whose_content_is_gone(store):
    snap, layer = commit_tree(store, [("file", "f", b"x")])
    store.record("k", parent_key=None, snapshot=snap, layer=layer, description={})
    store.blob_path(layer.blob.digest).unlink()
    assert store.lookup("k") is None
    assert store.records() == []


def test_records_are_shared_between_store_objects(tmp_path):
    with Store.open(tmp_path / "s") as a, Store.open(tmp_path / "s") as b:
        a.record("k", parent_key=None, snapshot=None, layer=None, description={"by": "a"})
        assert b.lookup("k").description == {"by": "a"}


def _child(script: str, root: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from cache import Store
        store = Store.open({str(root)!r})
    """) + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_lock_excludes_another_process(store):
    child = _child("""
        with store.lock("step-key"):
            print("locked", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
    """, store.root)
    try:
        assert child.stdout.readline() == "locked\n"
        t0 = time.monotonic()
        with pytest.raises(LockTimeout) as e:
            with store.lock("step-key", timeout=0.3):
                pass
        assert time.monotonic() - t0 >= 0.3 and e.value.key == "step-key"
        with store.lock("other-key", timeout=0.3):
            pass  # independent keys do not block each other
        child.stdin.write("go\n")
        child.stdin.flush()
        with store.lock("step-key", timeout=10):
            assert child.stdout.readline() == "released\n"
    finally:
        child.kill()
        child.wait()


def test_lock_excludes_another_thread(store):
    inside, overlaps = [], []

    def worker():
        for _ in range(20):
            with store.lock("k", timeout=10):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []


def test_two_processes_count_under_the_lock(store, tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    script = f"""
        from pathlib import Path
        p = Path({str(counter)!r})
        for i in range(30):
            with store.lock("counter"):
                n = int(p.read_text())
                time.sleep(0.002)
                p.write_text(str(n + 1))
            store.record(f"k-{{i}}-{{__import__('os').getpid()}}", parent_key=None, snapshot=None,
                         layer=None, description={{"i": i}})
        print("done", flush=True)
    """
    children = [_child(script, store.root) for _ in range(3)]
    for c in children:
        assert c.communicate(timeout=60)[0] == "done\n"
    assert counter.read_text() == "90"
    assert len(store.records()) == 90


def test_opening_a_store_reads_only_what_recovery_needs(tmp_path, monkeypatch):
    """Recovery at every open needs each snapshot's state, not a full row (~25 µs each: a store of a few hundred
    snapshots paid 10+ ms per build); what it removes is tested in test_crash.py."""
    from cache.index import Index

    root = tmp_path / "store"
    with Store.open(root) as store:
        for _ in range(3):
            m = store.prepare(None)
            (m.upper / "f").write_text("x")
            store.commit(m)
        assert set(store._index.snapshot_states().values()) == {("ready", None)}
    built: list = []
    real = Index._snap
    monkeypatch.setattr(Index, "_snap", staticmethod(lambda row: built.append(row) or real(row)))
    with Store.open(root):
        pass
    assert built == []
