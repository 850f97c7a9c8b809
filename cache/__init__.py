"""pybuild's content-addressed store: blobs, layer snapshots, the cache index, images, GC.

`Store` is a facade over the modules below; several processes may use one root at once.
On-disk layout of a store root::

    <root>/                        0700, owned by the user of the store (root: as /var/lib/docker), so image
                                   content (setuid binaries, device nodes) is never reachable by other users
    <root>/store.lock              LOCK_SH by every open Store (locks.py)
    <root>/index.db[-wal,-shm]     sqlite index (schema in index.py)
    <root>/blobs/sha256/<hex>      blobs (blobs.py); .tmp-* are writes in progress
    <root>/snapshots/<id>/fs       layer directories used as overlay lowerdirs (snapshots.py)
    <root>/snapshots/empty         the empty lowerdir of `scratch`
    <root>/tmp/{m,i,d}-*           mutable snapshots, imports and deletions in progress
    <root>/locks/<aa>/<hash>       per-cache-key build locks

Crash safety: files are written under temp names and renamed; index rows precede the
directories they name; `Store.open` removes what dead processes left behind.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cache import cachemounts, gc, locks, refs
from cache.blobs import BlobStore
from cache.errors import BlobNotFound, CorruptBlob, Interrupted, LockTimeout, StoreError
from cache.index import Index
from cache.model import (
    ByteReader,
    CacheRecord,
    Descriptor,
    Digest,
    ImageRecord,
    Layer,
    MutableSnapshot,
    Snapshot,
    media_type_for,
    sniffed_media_type,
)
from cache.userns import in_user_namespace
from cache.snapshots import UNPACKERS, Fetch, SnapshotStore
from cache.statcache import StatCache

if TYPE_CHECKING:
    from cache.unpack import UnpackLimits  # loaded where layers are unpacked (see SnapshotStore.commit)

__all__ = [
    "BlobNotFound", "CacheRecord", "CorruptBlob", "Descriptor", "Digest", "ImageRecord", "Interrupted", "Layer",
    "LockTimeout", "MutableSnapshot", "Snapshot", "Store", "StoreError",
]


class Store:
    """A content-addressed store rooted at ``root``; open with `Store.open`, end with `close`."""

    root: Path

    def __init__(self, root: Path, unpack_limits: UnpackLimits | None = None) -> None:
        """Use `Store.open`."""
        self.root = root
        _make_private(root)
        self._lock = locks.StoreLock(root / "store.lock")
        try:
            self._blobs = BlobStore(root)
            self._index = Index(root / "index.db")
            self._snapshots = SnapshotStore(root, self._index, self._blobs, unpack_limits)
            self._stat = StatCache(self._index)
            self._blobs.clean_temp()
            self._snapshots.recover()
        except BaseException:
            self._lock.close()
            raise

    @classmethod
    def open(cls, root: str | Path, *, unpack_limits: UnpackLimits | None = None) -> Store:
        """Open (creating if needed) the store at ``root``; cleans up after crashed writers. ``unpack_limits``
        bounds what one imported layer may unpack to (None: `cache.unpack.UnpackLimits`' defaults)."""
        try:
            return cls(Path(root).absolute(), unpack_limits)
        except OSError as e:
            raise StoreError(f"open store: {e.strerror or e}", path=root) from e

    def close(self) -> None:
        """Release the index and locks; idempotent. Open MutableSnapshots stay valid on disk
        until aborted (or cleaned by the next open once this process is gone). Committed snapshots are settled
        first (a failed one is dropped: call `settle` to hear of it)."""
        if self._lock.fd is not None:
            try:
                self._snapshots.settle()
            except (StoreError, OSError):
                pass
            self._index.close()
            self._lock.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- blobs -----------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> Descriptor:
        """Store bytes; idempotent. The descriptor's media_type is "" (set it with replace)."""
        return self._blobs.put(data)

    def put_blob_file(self, src: ByteReader) -> Descriptor:
        """Stream ``src`` to EOF into the store, hashing while copying."""
        return self._blobs.put_stream(src)

    def blob_path(self, digest: str) -> Path:
        """The read-only file of a blob; raises BlobNotFound."""
        return self._blobs.path(digest)

    def open_blob(self, digest: str) -> BinaryIO:
        """A stream that raises CorruptBlob at EOF/close if the content does not match."""
        return self._blobs.open(digest)  # type: ignore[return-value]

    def has_blob(self, digest: str) -> bool:
        return self._blobs.has(digest)

    def verify_blob(self, digest: str) -> None:
        """Re-hash a blob; raises CorruptBlob or BlobNotFound."""
        self._blobs.verify(digest)

    # --- snapshots -------------------------------------------------------------------------
    def empty_dir(self) -> Path:
        """An empty read-only directory: the lowerdir for ``scratch``."""
        return self._snapshots.empty

    def prepare(self, parent: Snapshot | None) -> MutableSnapshot:
        """Fresh upper/work dirs over ``parent``; end with exactly one commit() or abort()."""
        return self._snapshots.prepare(parent)

    def lowerdirs(self, snap: Snapshot | None) -> list[Path]:
        """The chain of snapshot dirs, top-most first; [empty_dir()] for None."""
        return self._snapshots.lowerdirs(snap)

    def relative_lowerdirs(self, snap: Snapshot | None) -> tuple[Path, list[str]]:
        """(base, lowerdirs relative to base), top-most first. Mount overlay with ``base`` as
        the current directory to fit hundreds of layers into the one-page mount data."""
        return self._snapshots.relative_lowerdirs(snap)

    def commit(self, m: MutableSnapshot, *, compression: str | None = "gzip", source_date_epoch: int | None = None,
               cancelled: Callable[[], bool] | None = None,
               progress: Callable[[int, int], None] | None = None) -> tuple[Snapshot, Layer | None]:
        """Make ``m`` (unmounted) a layer blob + snapshot; an empty upper gives (parent, None).

        ``compression`` is "gzip", "zstd" or "uncompressed", or None: lazy, the tar is only hashed and its blob is
        made by `layer_blob` when an export needs it (the layer is described as its tar, digest = diff_id). Mtimes are clamped to
        ``source_date_epoch`` when given (the builder reads SOURCE_DATE_EPOCH, once: builder/options.py).
        An identical (parent, diff_id) snapshot already stored is reused. ``cancelled`` is polled
        while the layer is written; once it returns True the commit raises `Interrupted` and keeps
        nothing (``m`` is left for abort()). ``progress(tarred, compressed)`` hears the bytes so far after
        each write (at most 1 MiB apart).
        """
        return self._snapshots.commit(m, compression, source_date_epoch, cancelled,  # type: ignore[return-value]
                                      progress)

    def settle(self) -> None:
        """Wait until the snapshots this process committed are on disk and marked ready (a commit returns while
        its files are still written out, so the next step need not wait); raises StoreError for one that failed."""
        self._snapshots.settle()

    def abort(self, m: MutableSnapshot) -> None:
        """Drop ``m``'s temp dirs (unmount first); idempotent."""
        self._snapshots.abort(m)

    def import_layer(self, parent: Snapshot | None, blob: Descriptor) -> Snapshot:
        """Unpack a stored layer blob (decoded as its media type declares; sniffed without one) over ``parent``."""
        return self._snapshots.import_layer(parent, blob)

    def import_layers(self, parent: Snapshot | None, blobs: list[Descriptor], *, fetch: Fetch | None = None,
                      workers: int | None = None) -> list[Snapshot]:
        """`import_layer` for a chain of blobs (each over the one before): the missing ones are unpacked
        side by side (``workers`` at once) and installed in order; returns one snapshot per blob. A blob not in
        the store is unpacked while ``fetch(blob, stop)`` streams it in (a stream that raises at its end unless
        the bytes are the blob's), and stored on the way; a blob that fails leaves neither file nor snapshot."""
        return self._snapshots.import_layers(parent, blobs, fetch, workers or UNPACKERS)

    def layer_blob(self, layer: Layer, compression: str | None, cancelled: Callable[[], bool] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> Layer:
        """The same layer with a present blob in ``compression`` ("gzip", "zstd", "uncompressed"; None: any present
        blob, else gzip), made once from another blob or its snapshot when missing (`cache.layerblob`), verified
        against the diff_id. Every reader of a layer's bytes (export, push, cache export, `layers`, `run`) goes
        through it: a lazily committed layer has no blob until then. ``cancelled`` as in commit()."""
        from cache.layerblob import layer_blob  # lazy: saves ~1 ms at start-up

        self._snapshots.settle()  # a lazy layer's snapshot is its source once it is ready
        return layer_blob(self, layer, compression, cancelled, progress)

    layer_as = layer_blob  # the earlier name

    def has_layer(self, layer: Layer) -> bool:
        """Does the store hold a layer's bytes: a blob of its diff_id, or the snapshot its lazy tar is made from."""
        from cache.layerblob import has  # lazy: saves ~1 ms at start-up

        return has(self, layer)

    def snapshot(self, snap_id: int) -> Snapshot:
        """A committed snapshot; raises StoreError if missing."""
        return self._snapshots.get(snap_id)

    def snapshot_layer(self, snap_id: int) -> Layer | None:
        """The layer blob a snapshot was committed to or imported from (None if unknown)."""
        return self._snapshots.layer(snap_id)

    # --- cache index -----------------------------------------------------------------------
    def lookup(self, key: str) -> CacheRecord | None:
        """The record for ``key`` if it and what it needs still exist; bumps last_used/uses."""
        record = self._index.get_record(key, touch=True)
        if record is None:
            return None
        intact = record.layer is None or self._blobs.has(record.layer.blob.digest) or self.has_layer(record.layer)
        if record.snapshot_id is not None:
            try:
                intact = intact and self._snapshots.get(record.snapshot_id).path.is_dir()
            except StoreError:
                row = self._index.snapshot(record.snapshot_id)
                if row is not None and row.state == "pending":  # another process still writes it out: a miss
                    return None
                intact = False
        if not intact:  # a half-pruned or damaged entry: a miss, and forget it
            self._index.delete_records([key])
            return None
        return record

    def record(self, key: str, *, parent_key: str | None, snapshot: Snapshot | None,
               layer: Layer | None, description: dict[str, Any]) -> CacheRecord:
        """Store (or replace) the result of the step with cache key ``key``."""
        size = (snapshot.size if snapshot else 0) + (layer.blob.size if layer else 0)
        return self._index.put_record(key, parent_key, snapshot.id if snapshot else None,
                                      layer, description, size)

    def record_imported(self, key: str, *, parent_key: str | None, snapshot: Snapshot | None, layer: Layer | None,
                        description: dict[str, Any], created: float) -> CacheRecord:
        """`record` a step result that came from another store (a remote cache), keeping its creation time, which
        the image's history and config carry."""
        self.record(key, parent_key=parent_key, snapshot=snapshot, layer=layer, description=description)
        self._index.set_record_created(key, created)
        return self._index.get_record(key, touch=False)  # type: ignore[return-value]

    def records(self) -> list[CacheRecord]:
        return self._index.records()

    @contextmanager
    def lock(self, key: str, timeout: float = 600) -> Iterator[None]:
        """Exclusive per-key lock across processes and threads; raises LockTimeout."""
        with locks.key_lock(self.root / "locks", key, timeout):
            yield

    def file_digest(self, path: str | Path) -> Digest:
        """sha256 of a file's content, memoised by its stat (for context checksums)."""
        return self._stat.digest(path)

    def file_digests(self, items: Sequence[tuple[str | Path, os.stat_result]]) -> list[Digest]:
        """`file_digest` of many files at once, each given with the stat the caller already took (a context
        walk): one memo query, misses hashed on a few threads, new memo rows written in one transaction."""
        return self._stat.digests(items)

    # --- images and references -------------------------------------------------------------
    def put_image(self, manifest: bytes, config: bytes, layers: list[Layer]) -> ImageRecord:
        """Store manifest and config blobs and record the image (its layers must be in the store: `has_layer`)."""
        return refs.put_image(self._index, self._blobs, manifest, config, layers, self.has_layer)

    def tag(self, name: str, manifest_digest: str) -> None:
        """Point ``name`` (already normalised) at a stored image; replaces an older tag."""
        refs.tag(self._index, name, manifest_digest)

    def resolve(self, name: str) -> ImageRecord | None:
        return refs.resolve(self._index, name)

    def images(self) -> list[tuple[str, ImageRecord]]:
        """(name, image) for every tag, sorted by name."""
        return refs.images(self._index)

    def untag(self, name: str) -> None:
        """Remove a tag; raises StoreError if ``name`` is not tagged."""
        refs.untag(self._index, name)

    def all_images(self) -> list[ImageRecord]:
        """Every stored image, tagged or not, oldest first."""
        return self._index.all_images()

    def remove_image(self, manifest_digest: str) -> bool:
        """Forget an untagged image now (its content is swept by prune); False if still tagged or unknown."""
        return refs.remove_image(self._index, manifest_digest)

    # --- usage and garbage collection ------------------------------------------------------
    def usage(self) -> dict[str, int]:
        """Sizes in bytes and counts; ``reclaimable`` is what prune(all=True) would free now."""
        self._snapshots.settle()
        blob_bytes = sum(self._blobs.path_for(d).stat().st_size for d in self._blobs.digests())
        snaps = self._index.snapshots()
        snap_bytes = sum(s.size for s in snaps)
        with self._lock.exclusive() as alone:  # alone: what prune would free now, grace periods included
            p = gc.plan(self._index, self._blobs, all=True, keep_storage=None, until=None, alone=alone)
        mounts = cachemounts.listing(self.root)
        mount_bytes = sum(m.size for m in mounts)
        return {"total": blob_bytes + snap_bytes + mount_bytes, "reclaimable": p.bytes + mount_bytes,
                "blob_bytes": blob_bytes, "snapshot_bytes": snap_bytes, "cache_mount_bytes": mount_bytes,
                "records": len(self._index.records()), "snapshots": len(snaps),
                "images": len(self._index.tags()), "cache_mounts": len(mounts)}

    def prune(self, *, all: bool = False, keep_storage: int | None = None,
              until: float | None = None, cache_mounts_only: bool = False) -> dict[str, int]:
        """Remove cache records by policy and whatever no tag or remaining record reaches.

        ``until`` is an age in seconds: only records unused for longer are removed.
        ``keep_storage`` stops removing (least recently used first) once records fit in it.
        With neither and all=False only unreferenced snapshots/blobs/images go. ``all`` also removes the RUN cache
        mounts no build uses now (cache/cachemounts.py); ``cache_mounts_only`` removes just those.
        Returns counts and ``reclaimed`` bytes.
        """
        if cache_mounts_only:
            count, freed = cachemounts.prune(self.root)
            return {"records": 0, "snapshots": 0, "images": 0, "blobs": 0, "cache_mounts": count, "reclaimed": freed}
        result = self._prune_records(all=all, keep_storage=keep_storage, until=until)
        count = freed = 0
        if all:
            count, freed = cachemounts.prune(self.root)
        return {**result, "cache_mounts": count, "reclaimed": result["reclaimed"] + freed}

    def _prune_records(self, *, all: bool, keep_storage: int | None, until: float | None) -> dict[str, int]:
        self._snapshots.settle()  # this process's snapshots are ready, so GC judges them as any other
        total = 0
        if keep_storage is not None and not all:  # what records can free: layers and snapshots, not cache mounts
            usage = self.usage()
            total = usage["blob_bytes"] + usage["snapshot_bytes"]
        with self._lock.exclusive() as alone:
            if keep_storage is not None and not all:
                p = gc.plan_within(self._index, self._blobs, keep_storage=keep_storage, total=total,
                                   until=until, alone=alone)
            else:
                p = gc.plan(self._index, self._blobs, all=all, keep_storage=keep_storage,
                            until=until, alone=alone)
            result = gc.sweep(p, self._index, self._blobs, self._snapshots)
            if alone:
                self._lock.clean_key_locks(self.root / "locks")
        return result


def _make_private(root: Path) -> None:
    """Create ``root`` mode 0700, or make an existing one 0700 (stores made before this rule were 0755). A root
    that belongs to another user is refused: it (or a directory in it) may be held open by that user."""
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # a symlinked root is the admin's choice
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            if in_user_namespace():  # rootless: ids are the user namespace's (0 = you)
                raise StoreError("the store directory belongs to another user (root's store, or another "
                                 "user's): in rootless mode use a store of your own (the default, or --root DIR)",
                                 path=root)
            raise StoreError(f"the store directory belongs to uid {st.st_uid}, not to this user (uid "
                             f"{os.geteuid()}): pick a store of your own with --root DIR, or remove it", path=root)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
