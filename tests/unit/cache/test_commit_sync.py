"""A committed snapshot is synced to disk before the index calls it ready (cache.durable.SyncFs).

Build containers mount their overlay `volatile` (nothing syncs at unmount), so this sync is what makes a
'ready' snapshot survive a crash; it runs on its own thread from the start of the commit."""
from __future__ import annotations

import os
import threading

import pytest

from cache import StoreError, durable, snapshots


def test_the_sync_starts_with_the_commit_and_ends_before_the_row_is_ready(store, monkeypatch):
    """The commit returns once the files are open for the sync and renamed into the store: the snapshot is usable
    at once in this process, 'pending' (another process's lookup misses it) until the sync is done."""
    events: list[str] = []
    real_sync, real_insert, real_ready = snapshots.SyncFs, store._index.insert_pending, store._index.mark_ready

    class Recorded(real_sync):
        def __init__(self, path):
            events.append(f"sync started on {os.path.basename(path)}")
            super().__init__(path)

        def wait(self):
            super().wait()
            events.append("sync done")

    def insert(*args, **kwargs):
        events.append("row inserted")
        return real_insert(*args, **kwargs)

    def ready(*args, **kwargs):
        events.append("row ready")
        return real_ready(*args, **kwargs)

    monkeypatch.setattr(snapshots, "SyncFs", Recorded)
    monkeypatch.setattr(store._index, "insert_pending", insert)
    monkeypatch.setattr(store._index, "mark_ready", ready)
    m = store.prepare(None)
    (m.upper / "f").write_bytes(os.urandom(1 << 20))
    snap, layer = store.commit(m, compression="gzip")
    assert store.snapshot(snap.id).path.joinpath("f").stat().st_size == 1 << 20  # usable before it is ready
    store.settle()
    assert events[:2] == ["sync started on upper", "row inserted"]
    assert events.index("sync done") < events.index("row ready")
    assert store._index.snapshot(snap.id).state == "ready"
    assert os.listdir(store.root / "tmp") == []  # the temp dir and its lock went once the row was ready


def test_syncfs_runs_on_its_own_thread_and_succeeds(tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(b"x" * 4096)
    threads: list[int] = []
    real_fsync = os.fsync

    def recorded(fd):
        threads.append(threading.get_ident())
        return real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", recorded)
    sync = durable.SyncFs(tmp_path)
    sync.wait()
    assert sync.error is None
    assert threads and threading.get_ident() not in threads  # synced on another thread, which has ended


def test_a_background_task_is_joined_after_it_returned():
    from cache.tasks import Background

    release, seen = threading.Event(), []
    task = Background(lambda value: (release.wait(), seen.append(value)), 7)
    assert task.join(0) is False  # running: it waits for `release`
    release.set()
    assert task.join(60) is True and seen == [7]


def test_a_sync_that_cannot_open_its_directory_fails_the_wait(tmp_path):
    sync = durable.SyncFs(tmp_path / "missing")
    with pytest.raises(StoreError, match="cannot write the snapshot to disk"):
        sync.wait()


def test_a_small_tree_is_synced_file_by_file_and_a_large_one_with_syncfs(tmp_path, monkeypatch):
    """Few entries: fsync on each regular file and directory, deepest first (other programs' dirty data on the
    filesystem is not written for us); beyond FEW_ENTRIES one syncfs instead of thousands of fsyncs."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recorded(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", recorded)
    small = tmp_path / "small"
    (small / "dir").mkdir(parents=True)
    (small / "dir" / "big.bin").write_bytes(os.urandom(1 << 20))
    (small / "top.txt").write_text("t")
    os.symlink("top.txt", small / "link")
    sync = durable.SyncFs(small)
    sync.wait()
    assert sync.error is None
    assert sorted(synced[:-1]) == sorted([str(small / "dir" / "big.bin"), str(small / "dir"), str(small / "top.txt")])
    assert synced[-1] == str(small) and synced.index(str(small / "dir" / "big.bin")) < synced.index(str(small / "dir"))

    synced.clear()
    large = tmp_path / "large"
    large.mkdir()
    for i in range(durable.FEW_ENTRIES + 1):
        (large / f"f{i}").write_text(str(i))
    sync = durable.SyncFs(large)
    sync.wait()
    assert sync.error is None and synced == []  # syncfs(2), not one fsync per file
