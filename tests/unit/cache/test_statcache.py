"""file_digest: content sha256 memoised by stat, re-read whenever the file changes."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from cache import Digest, StoreError


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
