"""A persistent memo of file content digests keyed by what stat() says about the file.

``statcache`` rows (see index.py) map a path to (dev, ino, size, mtime_ns, ctime_ns) and the
sha256 of the content seen then. A file whose stat tuple is unchanged is not re-read; ctime
catches writes that restore the mtime. Like git's index, a write within the same timestamp
tick as our stat could go unnoticed, so files changed less than `RACY_NS` before they were
read are not memoised, nor are files whose fstat after the read differs from the stat the
memo row would be keyed on (they changed while, or since, being looked at).

`StatCache.digests` is the bulk form a context walk uses: it takes the stat results the walk
already has, prefetches the memo rows with one range query, hashes the misses on `WORKERS`
threads (file reads and sha256 of large buffers release the GIL) and writes the new rows in
one transaction.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cache.errors import StoreError
from cache.index import Index
from cache.model import Digest

CHUNK = 1 << 20  # os.readv into one reused 1 MiB buffer per thread: measured fastest (vs read(), mmap,
                 # hashlib.file_digest's 256 KiB) on a 1 GiB context, 1 and 2 threads
RACY_NS = 50_000_000  # well above the kernel's coarse timestamp tick (1-10 ms)
WORKERS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
POOL_MIN_BYTES = 4 << 20  # below this a second thread saves less than it costs to start

StatKey = tuple[int, int, int, int, int]


def _key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _storable(path: str) -> bool:
    """Can the memo's text column hold ``path``? Not a name that is not UTF-8 (os.fsdecode's surrogates): such a
    file is hashed every time instead."""
    try:
        path.encode()
        return True
    except UnicodeEncodeError:
        return False


class StatCache:
    """`digest(path)`/`digests(items)`: sha256 of regular files' content, memoised in the index."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def digest(self, path: str | Path) -> Digest:
        p = os.path.abspath(path)
        try:
            st = os.stat(p)
        except OSError as e:
            raise StoreError(f"stat for checksum: {e.strerror}", path=p) from e
        return self.digests([(p, st)])[0]

    def digests(self, items: Sequence[tuple[str | Path, os.stat_result]]) -> list[Digest]:
        """The digest of each (path, stat of it) in order; the memo is keyed on the given stat, which must be
        the file's own (a regular file: lstat or stat). Raises StoreError("read for checksum") for a file
        that cannot be read (deleted since the stat)."""
        paths = [os.path.abspath(p) for p, _ in items]
        memo = self._prefetch([p for p in paths if _storable(p)])
        found: dict[str, Digest] = {}
        todo: dict[str, os.stat_result] = {}
        for path, (_, st) in zip(paths, items):
            row = memo.get(path)
            if row is not None and row[0] == _key(st):
                try:
                    found[path] = Digest(row[1])
                    continue
                except ValueError:  # a damaged memo row: read the file again (and replace the row)
                    pass
            todo.setdefault(path, st)
        rows = []
        for (path, st), (digest, stable) in zip(todo.items(), hash_files(list(todo.items()))):
            found[path] = digest
            if stable and _storable(path):
                rows.append((path, *_key(st), digest))
        if rows:
            with self.index.write() as db:
                db.executemany("INSERT OR REPLACE INTO statcache VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return [found[p] for p in paths]

    def _prefetch(self, paths: list[str]) -> dict[str, tuple[StatKey, str]]:
        """Memo rows for `paths`: one range scan of the primary key between the first and last path (one
        context root), which may also return rows of other files in that range."""
        if not paths:
            return {}
        rows = self.index.query("SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM statcache"
                                " WHERE path BETWEEN ? AND ?", (min(paths), max(paths)))
        return {r[0]: (tuple(r[1:6]), r[6]) for r in rows}

    def forget(self, prefix: str | Path | None = None) -> None:
        """Drop memo rows (all, or those under ``prefix``)."""
        with self.index.write() as db:
            if prefix is None:
                db.execute("DELETE FROM statcache")
            else:
                base = os.path.abspath(prefix)
                db.execute("DELETE FROM statcache WHERE path=? OR substr(path, 1, ?)=?",
                           (base, len(base) + 1, base + "/"))


def hash_files(items: Sequence[tuple[str, os.stat_result]],
               workers: int = WORKERS) -> list[tuple[Digest, bool]]:
    """(digest, stable) of each (path, stat) in order, see `_hash_one`; the biggest files first on up to
    `workers` threads. The first error is raised once every thread has stopped (at its next file)."""
    out: list[tuple[Digest, bool]] = [None] * len(items)  # type: ignore[list-item]
    pending = iter(sorted(range(len(items)), key=lambda i: -items[i][1].st_size))
    lock, stop = threading.Lock(), threading.Event()

    def drain() -> None:
        buf = memoryview(bytearray(CHUNK))
        while not stop.is_set():
            with lock:
                i = next(pending, None)
            if i is None:
                return
            out[i] = _hash_one(items[i][0], items[i][1], buf)

    total = sum(st.st_size for _, st in items)
    threads = min(workers, len(items)) if total >= POOL_MIN_BYTES else 1
    if threads <= 1:
        drain()
        return out
    with ThreadPoolExecutor(threads, thread_name_prefix="statcache") as pool:
        futures = [pool.submit(drain) for _ in range(threads)]
        try:
            for future in futures:
                future.result()
        finally:
            stop.set()  # an error or Ctrl-C: the other threads stop at their next file
    return out


def _hash_one(path: str, st: os.stat_result, buf: memoryview) -> tuple[Digest, bool]:
    """The sha256 of the file's content and whether a memo row keyed on `st` is safe: the file still
    matches `st` after the read, and last changed more than RACY_NS before the read began."""
    started = time.time_ns()
    h = hashlib.sha256()
    try:
        # O_NONBLOCK: a file swapped for a FIFO since the walk must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            while n := os.readv(fd, [buf]):
                h.update(buf[:n])
            after = os.fstat(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise StoreError(f"read for checksum: {e.strerror}", path=path) from e
    stable = _key(after) == _key(st) and started - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS
    return Digest.from_hex(h.hexdigest()), stable
