"""Store.commit(cancelled=...): a cancel during the layer write stops the commit and keeps nothing."""

from __future__ import annotations

import os

import pytest

from cache import Interrupted


def _fill(upper, files: int, size: int) -> None:
    for i in range(files):
        (upper / f"f{i:03d}").write_bytes(os.urandom(size))


def _blobs(store) -> set[str]:
    return {p.name for p in (store.root / "blobs").rglob("*") if p.is_file()}


@pytest.mark.parametrize("after_writes", [0, 1, 20])
def test_a_cancelled_commit_raises_and_leaves_no_blob_snapshot_or_temp(store, after_writes):
    m = store.prepare(None)
    _fill(m.upper, 8, 3 << 20)  # 24 MiB: dozens of 1 MiB writes
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > after_writes

    before = _blobs(store)
    with pytest.raises(Interrupted):
        store.commit(m, compression="gzip", cancelled=cancelled)
    assert len(calls) == after_writes + 1, "the commit polled again after being told to stop"
    store.abort(m)
    assert _blobs(store) == before
    assert store.records() == []
    assert os.listdir(store.root / "tmp") == []
    assert not [p for p in (store.root / "snapshots").iterdir() if p.name != "empty"]


def test_a_commit_never_cancelled_polls_and_succeeds(store):
    m = store.prepare(None)
    _fill(m.upper, 3, 2 << 20)
    calls = []
    snap, layer = store.commit(m, compression="gzip", cancelled=lambda: bool(calls.append(1)))
    assert layer is not None and snap.path.is_dir()
    assert len(calls) >= 6  # at least once per MiB of file data
    assert store.has_blob(layer.blob.digest)
