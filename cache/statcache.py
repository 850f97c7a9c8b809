"""A persistent memo of file content digests keyed by what stat() says about the file.

``statcache`` rows (see index.py) map a path to (dev, ino, size, mtime_ns, ctime_ns) and the
sha256 of the content seen then. A file whose stat tuple is unchanged is not re-read; ctime
catches writes that restore the mtime. Like git's index, a write within the same timestamp
tick as our stat could go unnoticed, so files changed less than `RACY_NS` before they were
hashed are not memoised.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from cache.errors import StoreError
from cache.index import Index
from cache.model import Digest

CHUNK = 1 << 20
RACY_NS = 50_000_000  # well above the kernel's coarse timestamp tick (1-10 ms)


def _key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    """`digest(path)`: sha256 of a regular file's content, memoised in the index."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def digest(self, path: str | Path) -> Digest:
        p = os.path.abspath(path)
        try:
            st = os.stat(p)
        except OSError as e:
            raise StoreError(f"stat for checksum: {e.strerror}", path=p) from e
        rows = self.index.query("SELECT dev, ino, size, mtime_ns, ctime_ns, digest FROM statcache"
                                " WHERE path=?", (p,))
        if rows and tuple(rows[0][:5]) == _key(st):
            return Digest(rows[0][5])
        digest = _hash_file(p)
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_NS:
            with self.index.write() as db:
                db.execute("INSERT OR REPLACE INTO statcache VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (p, *_key(st), digest))
        return digest

    def forget(self, prefix: str | Path | None = None) -> None:
        """Drop memo rows (all, or those under ``prefix``)."""
        with self.index.write() as db:
            if prefix is None:
                db.execute("DELETE FROM statcache")
            else:
                base = os.path.abspath(prefix)
                db.execute("DELETE FROM statcache WHERE path=? OR substr(path, 1, ?)=?",
                           (base, len(base) + 1, base + "/"))


def _hash_file(path: str) -> Digest:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except OSError as e:
        raise StoreError(f"read for checksum: {e.strerror}", path=path) from e
    return Digest.from_hex(h.hexdigest())
