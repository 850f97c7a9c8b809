"""Crash safety and concurrent use: SIGKILL writers mid-operation, then reopen and check.

`check_store` asserts the invariants the store promises after any crash: no temp files or
dirs left, no pending index rows, every blob hashes to its name, snapshot rows and
directories correspond one to one, and records only name snapshots that exist.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cache import Store, StoreError

from .helpers import snapshot_dirs

REPO = Path(__file__).resolve().parents[3]

WRITER = """
import io, os, sys, time
sys.path.insert(0, {repo!r})
from cache import Store
store = Store.open({root!r})
rnd = os.urandom
i = 0
while True:
    print("put", flush=True)
    store.put_blob_file(io.BytesIO(rnd(3 << 20)))
    print("commit", flush=True)
    parent = store.snapshot(1) if i and {chain} else None
    m = store.prepare(parent)
    for j in range(40):
        d = m.upper / f"d{{j % 5}}"
        d.mkdir(exist_ok=True)
        (d / f"f{{i}}-{{j}}").write_bytes(rnd(50_000))
    snap, layer = store.commit(m, compression={compression!r})
    store.record(f"k{{os.getpid()}}-{{i}}", parent_key=None, snapshot=snap, layer=layer,
                 description={{"i": i}})
    print("import", flush=True)
    store.import_layer(snap, layer.blob)  # a new (parent, diff_id): really unpacks
    i += 1
"""


def spawn_writer(root: Path, *, compression: str = "gzip", chain: bool = False) -> subprocess.Popen:
    code = textwrap.dedent(WRITER).format(repo=str(REPO), root=str(root), compression=compression,
                                          chain=chain)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def check_store(root: Path) -> Store:
    """Reopen ``root`` and assert it is clean and consistent; returns the open store."""
    store = Store.open(root)
    blob_dir = root / "blobs" / "sha256"
    assert [n for n in os.listdir(blob_dir) if n.startswith(".")] == []
    assert os.listdir(root / "tmp") == []
    for name in os.listdir(blob_dir):
        store.verify_blob("sha256:" + name)
    with sqlite3.connect(root / "index.db") as db:
        rows = dict(db.execute("SELECT id, state FROM snapshots").fetchall())
        record_snaps = {r[0] for r in db.execute("SELECT snapshot_id FROM records") if r[0]}
        snap_blobs = {r[0] for r in db.execute("SELECT blob FROM snapshots WHERE id NOT IN"
                                               " (SELECT snapshot FROM lazy_layers)") if r[0]}
        lazy = {r[0] for r in db.execute("SELECT snapshot FROM lazy_layers")}
    assert set(rows.values()) <= {"ready"}
    assert snapshot_dirs(root) == sorted(rows)
    assert record_snaps <= set(rows)
    assert lazy <= set(rows)  # a lazy layer's tar is made from its snapshot: the row goes with it
    for digest in snap_blobs:
        assert store.has_blob(digest)
    for snap_id in rows:
        assert store.snapshot(snap_id).path.is_dir()
    return store


@pytest.mark.parametrize("trial", range(6))
def test_sigkill_mid_write_leaves_a_usable_store(tmp_path, trial):
    rng = random.Random(trial)
    root = tmp_path / "store"
    Store.open(root).close()
    stage = ["put", "commit", "import"][trial % 3]
    child = spawn_writer(root, compression=["gzip", "zstd"][trial % 2], chain=trial >= 3)
    try:
        seen = 0
        for line in child.stdout:
            if line.strip() == stage:
                seen += 1
                if seen == 2:  # the second time round, so earlier results exist too
                    break
        time.sleep(rng.uniform(0.0, 0.15))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    store = check_store(root)
    try:  # and it still works: a full round of writes succeeds
        m = store.prepare(None)
        (m.upper / "after-crash").write_text("ok")
        snap, layer = store.commit(m)
        store.record("after", parent_key=None, snapshot=snap, layer=layer, description={})
        assert store.lookup("after").snapshot_id == snap.id
        store.prune(all=True)
    finally:
        store.close()
    check_store(root).close()


@pytest.mark.slow
def test_concurrent_writers_and_pruner_do_not_corrupt(tmp_path):
    root = tmp_path / "store"
    Store.open(root).close()
    writers = [spawn_writer(root, chain=True), spawn_writer(root, compression="zstd")]
    try:
        with Store.open(root) as store:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                store.prune()  # others are open: only what is unreferenced and old goes
                for rec in store.records():
                    found = store.lookup(rec.key)
                    assert found is None or store.snapshot(found.snapshot_id).path.is_dir()
                time.sleep(0.05)
    finally:
        for w in writers:
            w.send_signal(signal.SIGKILL)
            w.wait()
    with check_store(root) as store:
        assert len(store.records()) >= 2
        store.prune(all=True)
        assert store.records() == []
    check_store(root).close()


def test_open_removes_what_dead_writers_left(tmp_path):
    """The states a SIGKILL can leave, made by hand through the documented layout and schema."""
    root = tmp_path / "store"
    with Store.open(root) as live:
        alive = live.prepare(None)  # a writer that is still running: must survive
        (root / "snapshots" / "77" / "fs").mkdir(parents=True)  # dir without a row
        (root / "tmp" / "m-dead").mkdir()  # mutable snapshot without its lock file
        (root / "tmp" / "i-dead").mkdir()
        (root / "tmp" / "i-dead.lock").write_text("")  # lock file nobody holds
        (root / "tmp" / "d-half-deleted" / "fs").mkdir(parents=True)
        (root / "blobs" / "sha256" / ".tmp-dead").write_bytes(b"partial")
        with sqlite3.connect(root / "index.db") as db:  # row inserted, rename done, never marked
            db.execute("INSERT INTO snapshots (id, size, state, tmp, created) VALUES "
                       "(78, 0, 'pending', 'm-gone', 0)")
        (root / "snapshots" / "78" / "fs").mkdir(parents=True)
        with Store.open(root) as second:
            assert sorted(os.listdir(root / "tmp")) == sorted([alive.tmpdir.name, alive.tmpdir.name + ".lock"])
            assert snapshot_dirs(root) == []
            assert os.listdir(root / "blobs" / "sha256") == []
            with pytest.raises(StoreError, match="does not exist"):
                second.snapshot(78)
        (alive.upper / "f").write_text("still usable")
        snap, _ = live.commit(alive)
        assert (snap.path / "f").read_text() == "still usable"
    check_store(root).close()


def test_threads_share_one_store(store):
    from concurrent.futures import ThreadPoolExecutor

    def build(i: int):
        parent = None
        for step in range(3):
            m = store.prepare(parent)
            (m.upper / f"t{i}-s{step}").write_bytes(os.urandom(100_000))
            parent, layer = store.commit(m, compression=["gzip", "zstd"][i % 2])
            store.record(f"t{i}-s{step}", parent_key=None, snapshot=parent, layer=layer,
                         description={"thread": i})
        return parent

    with ThreadPoolExecutor(4) as pool:
        tops = list(pool.map(build, range(8)))
    assert len({t.id for t in tops}) == 8 and all(len(store.lowerdirs(t)) == 3 for t in tops)
    assert len(store.records()) == 24
    store.close()
    check_store(store.root).close()
