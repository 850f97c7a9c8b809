"""file_digest: content sha256 memoised by stat, re-read whenever the file changes."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from cache import Digest, StoreError
from cache.statcache import RACY_NS


def test_digest_matches_content_and_follows_changes(store, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"one")
    os.utime(f, (1_000_000, 1_000_000))  # old enough to be memoised
    assert store.file_digest(f) == Digest.of(b"one")
    assert store.file_digest(f) == Digest.of(b"one")
    f.write_bytes(b"two")  # same size, new mtime
    assert store.file_digest(f) == Digest.of(b"two")
    f.write_bytes(b"333")
    os.utime(f, (1_000_000, 1_000_000))  # mtime restored: ctime still gives it away
    assert store.file_digest(f) == Digest.of(b"333")


def test_unchanged_files_are_memoised(store, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"content")
    os.utime(f, (1_000_000, 1_000_000))
    time.sleep(0.1)  # files changed within the last 50 ms are not memoised
    first = store.file_digest(f)
    with sqlite3.connect(store.root / "index.db") as db:
        rows = db.execute("SELECT digest FROM statcache WHERE path=?", (str(f),)).fetchall()
    assert rows == [(first,)]


def test_missing_file(store, tmp_path):
    with pytest.raises(StoreError, match="stat for checksum"):
        store.file_digest(tmp_path / "absent")


# --- the bulk API: digests(items) with the caller's stat results --------------------------------

OLD = (1_000_000, 1_000_000)  # an mtime far in the past


def _settle() -> None:
    """Wait until the files just changed (ctime = now) are outside RACY_NS, so they may be memoised."""
    time.sleep(RACY_NS / 1e9 + 0.02)


def _files(tmp_path, count: int, size: int = 3000) -> list[tuple[str, os.stat_result]]:
    """count files with distinct content under tmp_path/ctx, old mtimes, paired with their stat."""
    root = tmp_path / "ctx"
    (root / "sub").mkdir(parents=True)
    items = []
    for i in range(count):
        f = root / ("sub" if i % 2 else "") / f"f{i:03d}"
        f.write_bytes(bytes([i % 251]) * (size + i))
        os.utime(f, OLD)
        items.append((str(f), os.stat(f)))
    _settle()
    return items


@pytest.fixture
def hash_calls(monkeypatch):
    """Count the files the statcache really reads (every read goes through statcache._hash_one)."""
    import cache.statcache as statcache

    calls: list[str] = []
    real = statcache._hash_one

    def counting(path, st, buf):
        calls.append(path)
        return real(path, st, buf)

    monkeypatch.setattr(statcache, "_hash_one", counting)
    return calls


def test_bulk_digests_equal_single_digests(store, tmp_path):
    items = _files(tmp_path, 40, size=300_000)  # enough bytes for the thread pool to be used
    bulk = store.file_digests(items)
    assert bulk == [Digest.of(open(p, "rb").read()) for p, _ in items]
    assert bulk == [store.file_digest(p) for p, _ in items]
    assert store.file_digests([]) == []


def test_bulk_memo_skips_reading_unchanged_files(store, tmp_path, hash_calls):
    # Proves the memo row is what answers when the stat is unchanged: the content is not read at all.
    # It cannot prove the stat tuple catches every change (see test_digest_matches_content_and_follows_changes).
    items = _files(tmp_path, 30)
    first = store.file_digests(items)
    assert len(hash_calls) == 30
    hash_calls.clear()
    assert store.file_digests(items) == first
    assert hash_calls == []


def test_bulk_rehashes_touched_files_only(store, tmp_path, hash_calls):
    items = _files(tmp_path, 30)
    first = store.file_digests(items)
    touched = [items[3][0], items[17][0]]
    for p in touched:
        os.utime(p, (2_000_000, 2_000_000))  # new mtime, same content: re-read, same digest
    _settle()
    hash_calls.clear()
    fresh = [(p, os.stat(p)) for p, _ in items]
    assert store.file_digests(fresh) == first
    assert sorted(hash_calls) == sorted(touched)
    hash_calls.clear()
    assert store.file_digests(fresh) == first  # the re-read files were memoised again
    assert hash_calls == []


def test_bulk_writes_memo_rows_in_one_transaction(store, tmp_path, monkeypatch):
    items = _files(tmp_path, 50)
    index = store._index
    real_write, writes = index.write, []

    def counting_write():
        writes.append(1)
        return real_write()

    monkeypatch.setattr(index, "write", counting_write)
    store.file_digests(items)
    assert len(writes) == 1
    with sqlite3.connect(store.root / "index.db") as db:
        assert db.execute("SELECT count(*) FROM statcache").fetchone()[0] == 50
    store.file_digests(items)  # all memoised: nothing to write
    assert len(writes) == 1


def test_bulk_does_not_memoise_racy_files(store, tmp_path):
    f = tmp_path / "new"
    f.write_bytes(b"just written")  # mtime = now: within RACY_NS of the read
    assert store.file_digests([(str(f), os.stat(f))]) == [Digest.of(b"just written")]
    with sqlite3.connect(store.root / "index.db") as db:
        assert db.execute("SELECT count(*) FROM statcache").fetchone()[0] == 0


def test_bulk_file_changed_since_its_stat_is_hashed_but_not_memoised(store, tmp_path):
    items = _files(tmp_path, 3)
    path, stale = items[1]
    with open(path, "ab") as fh:  # grows after the caller's stat (as during a walk)
        fh.write(b"more")
    os.utime(path, OLD)
    _settle()
    digests = store.file_digests(items)
    assert digests[1] == Digest.of(open(path, "rb").read())
    with sqlite3.connect(store.root / "index.db") as db:
        rows = db.execute("SELECT path FROM statcache").fetchall()
    assert (path,) not in rows and len(rows) == 2  # the stale stat must not vouch for the new content
    assert store.file_digests([(path, os.stat(path))]) == [digests[1]]


@pytest.mark.parametrize("size", [10, 300_000])  # hashed inline / on the thread pool
def test_bulk_deleted_file_is_a_clear_error(store, tmp_path, size):
    items = _files(tmp_path, 40, size)
    os.unlink(items[21][0])
    with pytest.raises(StoreError, match="read for checksum: No such file") as exc:
        store.file_digests(items)
    assert str(exc.value.path) == items[21][0]


def test_bulk_duplicate_paths_are_read_once(store, tmp_path, hash_calls):
    items = _files(tmp_path, 2)
    assert store.file_digests(items + items) == store.file_digests(items) * 2
    assert len(hash_calls) == 2


def test_bulk_memo_is_shared_between_stores_on_one_root(tmp_path):
    # two builds on one store: two Store objects (two sqlite connections) racing on the same rows
    from concurrent.futures import ThreadPoolExecutor

    from cache import Store

    items = _files(tmp_path, 200)
    stores = [Store.open(tmp_path / "shared") for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda s: s.file_digests(items), stores))
        assert results[0] == results[1] == [Digest.of(open(p, "rb").read()) for p, _ in items]
        with sqlite3.connect(tmp_path / "shared" / "index.db") as db:
            assert db.execute("SELECT count(*) FROM statcache").fetchone()[0] == 200
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize("spelling", ["{d}/f", "{d}//f", "{d}/./f", "{d}/sub/../f", "{rel}/f", "{d}/sub/../f/"])
def test_memo_rows_are_keyed_on_the_normalised_absolute_path(store, tmp_path, monkeypatch, spelling):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    os.utime(f, (1_000_000, 1_000_000))
    time.sleep(0.1)  # files changed within the last 50 ms are not memoised
    monkeypatch.chdir(tmp_path.parent)
    path = spelling.format(d=tmp_path, rel=tmp_path.name)
    if path.endswith("/"):  # not a spelling a walk produces; still the same file once normalised
        path = path.rstrip("/")
    assert store.file_digests([(path, os.stat(path))]) == [Digest.of(b"x")]
    with sqlite3.connect(store.root / "index.db") as db:
        assert db.execute("SELECT path FROM statcache").fetchall() == [(str(f),)]


def test_a_malformed_digest_in_the_memo_is_not_returned(store, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.utime(f, (1_000_000, 1_000_000))
    time.sleep(0.1)
    store.file_digests([(str(f), os.stat(f))])
    with sqlite3.connect(store.root / "index.db") as db:
        assert db.execute("UPDATE statcache SET digest='sha256:nothex'").rowcount == 1
    assert store.file_digests([(str(f), os.stat(f))]) == [Digest.of(b"x")]
    with sqlite3.connect(store.root / "index.db") as db:  # and the row is mended
        assert db.execute("SELECT digest FROM statcache").fetchall() == [(Digest.of(b"x"),)]


def test_a_file_name_that_is_not_utf8_is_hashed_and_not_memoised(store, tmp_path):
    # Linux names are bytes: a context may hold one that no text column can store (it failed every build)
    odd = os.fsdecode(bytes(tmp_path) + b"/\x1f\x8bX")
    with open(odd, "wb") as f:
        f.write(b"odd")
    plain = tmp_path / "plain"
    plain.write_bytes(b"odd")
    digests = store.file_digests([(odd, os.stat(odd)), (str(plain), plain.stat())])
    assert digests[0] == digests[1] == store.file_digest(plain)
    assert store.file_digests([(odd, os.stat(odd))]) == [digests[0]]  # again: hashed again, still right
