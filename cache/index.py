"""The cache index: one sqlite database (WAL mode) shared by every process using the store.

File: ``<root>/index.db`` (+ ``-wal``/``-shm``). Writers use ``BEGIN IMMEDIATE`` so two processes
never deadlock upgrading read locks; readers see a consistent snapshot (WAL). Schema (v1)::

    meta(key TEXT PK, value TEXT)                       -- {"schema": "1"}
    snapshots(id INTEGER PK AUTOINCREMENT,              -- ids are never reused: dir names
              parent INTEGER NULL,                      -- snapshot below; NULL = bottom layer
              diff_id TEXT NULL,                        -- sha256 of the layer tar
              blob TEXT NULL, blob_media_type TEXT,     -- the layer blob committed / imported
              blob_size INTEGER,
              size INTEGER,                             -- apparent bytes of regular files
              state TEXT,                               -- 'pending' (being moved in) | 'ready'
              tmp TEXT NULL,                            -- pending: temp dir whose lock is held
              created REAL)
    layers(blob TEXT PK, diff_id TEXT)                  -- compressed digest → diff_id, for reuse
    records(key TEXT PK, parent_key TEXT NULL,          -- one build-step result per cache key
            snapshot_id INTEGER NULL, diff_id TEXT NULL,
            blob TEXT NULL, blob_media_type TEXT, blob_size INTEGER,
            description TEXT,                           -- JSON shown by `cache inspect`
            created REAL, last_used REAL, uses INTEGER, size INTEGER)
    images(manifest TEXT PK, manifest_media_type TEXT, manifest_size INTEGER,
           config TEXT, config_media_type TEXT, config_size INTEGER,
           layers TEXT,                                 -- JSON [[diff_id, media_type, digest, size]]
           created REAL)
    tags(name TEXT PK, manifest TEXT, updated REAL)     -- "docker.io/me/app:latest" → image
    statcache(path TEXT PK, dev, ino, size, mtime_ns, ctime_ns INTEGER, digest TEXT)
    lazy_layers(snapshot INTEGER PK, diff_id TEXT,      -- a layer committed without a blob: its tar is made
                epoch INTEGER NULL)                     -- from the snapshot (mtimes clamped to epoch) on demand

A row in ``snapshots`` is inserted ('pending') *before* its directory is moved into place and
marked 'ready' after, so a directory without a row is garbage and a 'pending' row whose temp
dir is unlocked belongs to a dead process (both are cleaned by `Store.open`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.errors import StoreError
from cache.model import CacheRecord, Descriptor, Digest, ImageRecord, Layer

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT, parent INTEGER, diff_id TEXT,
    blob TEXT, blob_media_type TEXT, blob_size INTEGER, size INTEGER NOT NULL,
    state TEXT NOT NULL, tmp TEXT, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS snapshots_chain ON snapshots (parent, diff_id);
CREATE TABLE IF NOT EXISTS layers (blob TEXT PRIMARY KEY, diff_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, parent_key TEXT, snapshot_id INTEGER, diff_id TEXT,
    blob TEXT, blob_media_type TEXT, blob_size INTEGER, description TEXT NOT NULL,
    created REAL NOT NULL, last_used REAL NOT NULL, uses INTEGER NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    manifest TEXT PRIMARY KEY, manifest_media_type TEXT NOT NULL, manifest_size INTEGER NOT NULL,
    config TEXT NOT NULL, config_media_type TEXT NOT NULL, config_size INTEGER NOT NULL,
    layers TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tags (name TEXT PRIMARY KEY, manifest TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS statcache (
    path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER,
    ctime_ns INTEGER, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lazy_layers (snapshot INTEGER PRIMARY KEY, diff_id TEXT NOT NULL, epoch INTEGER);
CREATE INDEX IF NOT EXISTS lazy_layers_diff ON lazy_layers (diff_id);
"""


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """A row of the snapshots table (see the schema above)."""

    id: int
    parent: int | None
    diff_id: str | None
    layer: Layer | None
    size: int
    state: str
    tmp: str | None
    created: float


def _layer(diff_id: str | None, blob: str | None, media_type: str | None, size: int | None) -> Layer | None:
    if diff_id is None or blob is None:
        return None
    return Layer(Digest(diff_id), Descriptor(media_type or "", Digest(blob), int(size or 0)))


class Index:
    """Typed queries over the sqlite index; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            with self.write() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            version = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
        except sqlite3.Error as e:
            raise StoreError(f"open cache index: {e}", path=path) from e
        if version != SCHEMA_VERSION:
            raise StoreError(f"cache index has schema {version}, this pybuild knows {SCHEMA_VERSION}",
                             path=path)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error)."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[None]:
        """A read transaction: every query inside sees the same database state (WAL snapshot)."""
        with self._lock:
            self.db.execute("BEGIN")
            try:
                yield
            finally:
                self.db.execute("COMMIT")

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    # --- snapshots -------------------------------------------------------------------------
    def insert_pending(self, parent: int | None, diff_id: str | None, layer: Layer | None,
                       size: int, tmp: str, lazy: bool = False, epoch: int | None = None) -> int:
        """A 'pending' row; with ``lazy`` the layer has no blob yet and is made from this snapshot with mtimes
        clamped to ``epoch`` (SOURCE_DATE_EPOCH), recorded in the same transaction."""
        blob = layer.blob if layer else None
        with self.write() as db:
            cur = db.execute(
                "INSERT INTO snapshots (parent, diff_id, blob, blob_media_type, blob_size, size,"
                " state, tmp, created) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (parent, diff_id, blob and blob.digest, blob and blob.media_type,
                 blob and blob.size, size, tmp, time.time()))
            if layer is not None:
                db.execute("INSERT OR IGNORE INTO layers VALUES (?, ?)", (layer.blob.digest, layer.diff_id))
                if lazy:
                    db.execute("INSERT OR REPLACE INTO lazy_layers VALUES (?, ?, ?)",
                               (cur.lastrowid, layer.diff_id, epoch))
            return int(cur.lastrowid)  # type: ignore[arg-type]

    def mark_ready(self, snap_id: int) -> None:
        with self.write() as db:
            db.execute("UPDATE snapshots SET state='ready', tmp=NULL WHERE id=?", (snap_id,))

    def delete_snapshot(self, snap_id: int) -> None:
        with self.write() as db:
            db.execute("DELETE FROM snapshots WHERE id=?", (snap_id,))
            db.execute("DELETE FROM lazy_layers WHERE snapshot=?", (snap_id,))
            # a record may name a snapshot still being written out (a commit returns before it is ready): a crash
            # then leaves the pending row to recovery, which takes the record with it
            db.execute("DELETE FROM records WHERE snapshot_id=?", (snap_id,))

    def add_lazy(self, snap_id: int, diff_id: str, epoch: int | None) -> None:
        """Remember that ``diff_id``'s tar can be made from snapshot ``snap_id`` (kept if already known)."""
        with self.write() as db:
            db.execute("INSERT OR IGNORE INTO lazy_layers VALUES (?, ?, ?)", (snap_id, diff_id, epoch))

    def lazy_sources(self, diff_id: str) -> list[tuple[int, int | None, bool]]:
        """(snapshot id, epoch, ready) from which the tar of ``diff_id`` can be made, oldest first (not ready: still
        being written out by the process that committed it)."""
        return [(int(r[0]), r[1], r[2] == "ready") for r in self.query(
            "SELECT l.snapshot, l.epoch, s.state FROM lazy_layers l JOIN snapshots s ON s.id = l.snapshot"
            " WHERE l.diff_id=? ORDER BY l.snapshot", (diff_id,))]

    def lazy_snapshots(self) -> dict[str, list[int]]:
        """diff_id → the snapshots its tar can be made from (for GC)."""
        out: dict[str, list[int]] = {}
        for snap, diff_id in self.query("SELECT snapshot, diff_id FROM lazy_layers ORDER BY snapshot"):
            out.setdefault(diff_id, []).append(int(snap))
        return out

    _SNAP_COLS = "id, parent, diff_id, blob, blob_media_type, blob_size, size, state, tmp, created"

    @staticmethod
    def _snap(row: tuple[Any, ...]) -> SnapshotRow:
        sid, parent, diff_id, blob, mt, bsize, size, state, tmp, created = row
        return SnapshotRow(sid, parent, diff_id, _layer(diff_id, blob, mt, bsize), size, state, tmp,
                           created)

    def snapshot(self, snap_id: int) -> SnapshotRow | None:
        rows = self.query(f"SELECT {self._SNAP_COLS} FROM snapshots WHERE id=?", (snap_id,))
        return self._snap(rows[0]) if rows else None

    def snapshots(self) -> list[SnapshotRow]:
        return [self._snap(r) for r in self.query(f"SELECT {self._SNAP_COLS} FROM snapshots ORDER BY id")]

    def snapshot_states(self) -> dict[int, tuple[str, str | None]]:
        """id → (state, temp dir name) of every snapshot: what recovery reads at every open (full rows cost
        ~25 µs each, 10+ ms for a store of a few hundred snapshots)."""
        return {sid: (state, tmp) for sid, state, tmp in self.query("SELECT id, state, tmp FROM snapshots")}

    def find_snapshot(self, parent: int | None, diff_id: str) -> SnapshotRow | None:
        """A ready snapshot with this (parent, diff_id), the oldest if several."""
        rows = self.query(f"SELECT {self._SNAP_COLS} FROM snapshots WHERE parent IS ? AND diff_id=?"
                          " AND state='ready' ORDER BY id LIMIT 1", (parent, diff_id))
        return self._snap(rows[0]) if rows else None

    def add_layer(self, layer: Layer) -> None:
        """Remember that ``layer.blob`` holds ``layer.diff_id`` (another compression of a known layer)."""
        with self.write() as db:
            db.execute("INSERT OR IGNORE INTO layers VALUES (?, ?)", (layer.blob.digest, layer.diff_id))

    def blobs_for(self, diff_id: str) -> list[str]:
        """Every blob known to hold this diff_id (in any compression; some may be pruned since)."""
        return [r[0] for r in self.query("SELECT blob FROM layers WHERE diff_id=? ORDER BY blob", (diff_id,))]

    def layer_blobs(self) -> list[tuple[str, str]]:
        """Every (blob, diff_id) pair known."""
        return [(b, d) for b, d in self.query("SELECT blob, diff_id FROM layers")]

    def diff_id_for(self, blob: str) -> str | None:
        rows = self.query("SELECT diff_id FROM layers WHERE blob=?", (blob,))
        return rows[0][0] if rows else None

    # --- records ---------------------------------------------------------------------------
    _REC_COLS = ("key, parent_key, snapshot_id, diff_id, blob, blob_media_type, blob_size,"
                 " description, created, last_used, uses, size")

    @staticmethod
    def _record(row: tuple[Any, ...]) -> CacheRecord:
        key, pkey, sid, diff_id, blob, mt, bsize, desc, created, used, uses, size = row
        return CacheRecord(key, pkey, sid, _layer(diff_id, blob, mt, bsize), json.loads(desc),
                           created, used, uses, size)

    def get_record(self, key: str, *, touch: bool) -> CacheRecord | None:
        if touch:
            with self.write() as db:
                db.execute("UPDATE records SET last_used=?, uses=uses+1 WHERE key=?", (time.time(), key))
        rows = self.query(f"SELECT {self._REC_COLS} FROM records WHERE key=?", (key,))
        return self._record(rows[0]) if rows else None

    def put_record(self, key: str, parent_key: str | None, snapshot_id: int | None,
                   layer: Layer | None, description: dict[str, Any], size: int) -> CacheRecord:
        now = time.time()
        blob = layer.blob if layer else None
        try:
            desc = json.dumps(description, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise StoreError(f"record {key}: description is not JSON-able: {e}") from e
        with self.write() as db:
            db.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT(key) DO"
                " UPDATE SET parent_key=excluded.parent_key, snapshot_id=excluded.snapshot_id,"
                " diff_id=excluded.diff_id, blob=excluded.blob, blob_media_type=excluded.blob_media_type,"
                " blob_size=excluded.blob_size, description=excluded.description,"
                " last_used=excluded.last_used, size=excluded.size",
                (key, parent_key, snapshot_id, layer and layer.diff_id, blob and blob.digest,
                 blob and blob.media_type, blob and blob.size, desc, now, now, size))
        record = self.get_record(key, touch=False)
        assert record is not None
        return record

    def set_record_created(self, key: str, created: float) -> None:
        """Keep the creation time a record had elsewhere (a remote cache's record unpacked here)."""
        with self.write() as db:
            db.execute("UPDATE records SET created=? WHERE key=?", (created, key))

    def records(self) -> list[CacheRecord]:
        return [self._record(r) for r in self.query(f"SELECT {self._REC_COLS} FROM records ORDER BY created, key")]

    def delete_records(self, keys: list[str]) -> None:
        with self.write() as db:
            db.executemany("DELETE FROM records WHERE key=?", [(k,) for k in keys])

    # --- images and tags -------------------------------------------------------------------
    def put_image(self, image: ImageRecord) -> None:
        layers = json.dumps([[l.diff_id, l.blob.media_type, l.blob.digest, l.blob.size] for l in image.layers])
        m, c = image.manifest, image.config
        with self.write() as db:
            db.execute("INSERT OR IGNORE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (m.digest, m.media_type, m.size, c.digest, c.media_type, c.size, layers, image.created))
        # no (blob, diff_id) pairs from here: an image's config only claims them (pulled, loaded, cache-imported),
        # and `layers` is what layer_blob and import_layers take as verified (commits, unpacks, made blobs)

    @staticmethod
    def _image(row: tuple[Any, ...]) -> ImageRecord:
        mdig, mmt, msize, cdig, cmt, csize, layers, created = row
        return ImageRecord(Descriptor(mmt, Digest(mdig), msize), Descriptor(cmt, Digest(cdig), csize),
                           tuple(Layer(Digest(d), Descriptor(mt, Digest(b), s)) for d, mt, b, s in json.loads(layers)),
                           created)

    def image(self, manifest: str) -> ImageRecord | None:
        rows = self.query("SELECT * FROM images WHERE manifest=?", (manifest,))
        return self._image(rows[0]) if rows else None

    def all_images(self) -> list[ImageRecord]:
        return [self._image(r) for r in self.query("SELECT * FROM images ORDER BY created")]

    def delete_image(self, manifest: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM images WHERE manifest=? AND manifest NOT IN (SELECT manifest FROM tags)",
                       (manifest,))

    def set_tag(self, name: str, manifest: str) -> None:
        with self.write() as db:
            if db.execute("SELECT 1 FROM images WHERE manifest=?", (manifest,)).fetchone() is None:
                raise StoreError(f"tag {name}: no image with manifest {manifest} (put_image it first)")
            db.execute("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)", (name, manifest, time.time()))

    def tag(self, name: str) -> str | None:
        rows = self.query("SELECT manifest FROM tags WHERE name=?", (name,))
        return rows[0][0] if rows else None

    def tags(self) -> list[tuple[str, str]]:
        return [(n, m) for n, m in self.query("SELECT name, manifest FROM tags ORDER BY name")]

    def delete_tag(self, name: str) -> bool:
        with self.write() as db:
            return db.execute("DELETE FROM tags WHERE name=?", (name,)).rowcount > 0
