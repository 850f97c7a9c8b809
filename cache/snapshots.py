"""Snapshot directories: one per layer, stacked as overlay lowerdirs.

Layout (paths kept short: overlay mount data is one page, 4096 bytes, for all lowerdirs)::

    <root>/snapshots/empty           an empty read-only dir: the lowerdir of `scratch`
    <root>/snapshots/<id>/fs         the files of snapshot <id> (id = index row, never reused)
    <root>/tmp/m-<rand>/{upper,work}  a MutableSnapshot being built, guarded by the flock()ed
    <root>/tmp/m-<rand>.lock          file created before it (locks.create_locked)
    <root>/tmp/i-<rand>/fs (+ .lock)  a layer being unpacked by import_layers
    <root>/tmp/d-<rand>/              a snapshot being deleted (no lock: anyone may finish it)

Commit and import insert the index row ('pending') first, rename the directory to
``snapshots/<id>/fs`` (same filesystem, no copy), then mark the row 'ready' and drop the temp
dir. `SnapshotStore.recover` undoes whatever a killed process left half-way (see index.py).
Snapshots with the same (parent, diff_id) are deduplicated: the existing one is returned.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cache import locks
from cache.blobs import BlobStore
from cache.durable import SyncFs
from cache.errors import StoreError
from cache.index import Index, SnapshotRow
from cache.tasks import Background, StopReading
from cache.model import ByteReader, Descriptor, Digest, Layer, MutableSnapshot, Snapshot

if TYPE_CHECKING:
    from cache.unpack import UnpackLimits, UnpackStats

UNPACKERS = max(1, min(4, os.cpu_count() or 1))  # layers unpacked at once by import_layers
# (blob, stop) -> a stream of a blob's bytes that raises at its end unless they are the blob's (import_layers)
Fetch = Callable[[Descriptor, threading.Event], ByteReader]


class SnapshotStore:
    """Creates, commits, imports, looks up and deletes snapshot directories."""

    def __init__(self, root: Path, index: Index, blobs: BlobStore, limits: UnpackLimits | None = None) -> None:
        self.root = root
        self.limits = limits  # None: cache.unpack's defaults
        self.index = index
        self.blobs = blobs
        self.dir = root / "snapshots"
        self.tmp = root / "tmp"
        self.empty = self.dir / "empty"  # inside snapshots/ so relative lowerdirs can name it
        for d in (self.dir, self.tmp):  # 0700 below the 0700 root too: older stores made them 0755
            d.mkdir(mode=0o700, exist_ok=True)  # self.dir before self.empty, which lives inside it
            if stat.S_IMODE(d.stat().st_mode) != 0o700:
                os.chmod(d, 0o700)
        if not self.empty.is_dir():
            self.empty.mkdir(mode=0o555, exist_ok=True)
        self._settle_lock = threading.Lock()
        self._settling: dict[int, Background] = {}  # snapshot id → the thread that marks it ready
        self._failed: dict[int, BaseException] = {}

    # --- lookups ---------------------------------------------------------------------------
    def path(self, snap_id: int) -> Path:
        return self.dir / str(snap_id) / "fs"

    def _to_snapshot(self, row: SnapshotRow) -> Snapshot:
        return Snapshot(row.id, row.parent, row.diff_id, row.size, self.path(row.id))

    def get(self, snap_id: int) -> Snapshot:
        row = self.index.snapshot(snap_id)
        if row is None or (row.state != "ready" and not self.is_settling(snap_id)):
            raise StoreError(f"snapshot {snap_id} does not exist", path=self.path(snap_id))
        return self._to_snapshot(row)

    def layer(self, snap_id: int) -> Layer | None:
        row = self.index.snapshot(snap_id)
        return row.layer if row else None

    def lowerdirs(self, snap: Snapshot | None) -> list[Path]:
        """The snapshot chain, top-most first; [empty] for None."""
        if snap is None:
            return [self.empty]
        out = []
        current: int | None = snap.id
        while current is not None:
            out.append(self.path(current))
            row = self.index.snapshot(current)
            if row is None:
                raise StoreError(f"snapshot {snap.id}: ancestor {current} is missing")
            current = row.parent
        return out

    def relative_lowerdirs(self, snap: Snapshot | None) -> tuple[Path, list[str]]:
        """(base dir, lowerdirs relative to it): "12/fs" costs 6 bytes of mount data where an
        absolute path costs ~60, so ~500 layers fit the 4096-byte limit. Mount with the
        base dir as the working directory (BuildKit/containerd do the same)."""
        return self.dir, [os.path.relpath(p, self.dir) for p in self.lowerdirs(snap)]

    # --- temp dirs -------------------------------------------------------------------------
    def _temp_dir(self, kind: str) -> tuple[Path, int]:
        lockfile, fd = locks.create_locked(self.tmp, f"{kind}-", locks.LOCK_SUFFIX)
        d = lockfile.with_name(lockfile.name[: -len(locks.LOCK_SUFFIX)])
        d.mkdir(mode=0o700)
        return d, fd

    def prepare(self, parent: Snapshot | None) -> MutableSnapshot:
        d, fd = self._temp_dir("m")
        upper, work = d / "upper", d / "work"
        upper.mkdir(mode=0o755)
        work.mkdir(mode=0o700)
        return MutableSnapshot(parent, upper, work, self.lowerdirs(parent), d, fd)

    def abort(self, m: MutableSnapshot) -> None:
        """Remove the temp dirs of ``m`` (must be unmounted); idempotent."""
        if m.lock_fd is None:
            return
        self._drop_temp(m.tmpdir, m.lock_fd)
        m.lock_fd = None

    def _drop_temp(self, d: Path, fd: int) -> None:
        shutil.rmtree(d, ignore_errors=True)
        d.with_name(d.name + locks.LOCK_SUFFIX).unlink(missing_ok=True)
        locks.release(fd)

    # --- commit and import -----------------------------------------------------------------
    def commit(self, m: MutableSnapshot, compression: str | None, epoch: int | None,
               cancelled: Callable[[], bool] | None = None,
               progress: Callable[[int, int], None] | None = None) -> tuple[Snapshot | None, Layer | None]:
        """Snapshot ``m`` and describe its layer. ``compression`` None is lazy: the tar is only hashed (its
        diff_id), no blob is written, and the layer is the uncompressed tar named by its diff_id, made from the
        snapshot when `cache.layerblob.layer_blob` is asked for it. ``progress(tarred, compressed)`` hears the bytes."""
        # The layer-writing chain (tarfile, zstandard, the gzip threads: ~9 ms of imports) is loaded where a
        # layer is written or read, here and in import_layer: a fully cached build needs neither.
        from cache.layertar import is_empty_dir, write_layer
        from cache.tarsink import DiffSink, Stoppable

        if m.lock_fd is None:
            raise StoreError("commit of a snapshot already committed or aborted", path=m.tmpdir)
        if is_empty_dir(m.upper):
            self.abort(m)
            return m.parent, None
        synced = SyncFs(m.upper)  # the files reach the disk while the layer is hashed or compressed
        if compression is None:
            sink = DiffSink()
        else:
            from cache.compress import LayerSink  # lazy: saves ~7 ms at start-up

            sink = LayerSink(self.blobs, compression)
        try:
            out = sink if cancelled is None and progress is None else Stoppable(sink, cancelled, progress)
            stats = write_layer(m.upper, out, epoch=epoch)
            diff_id, blob = sink.finish()
        except BaseException:
            sink.discard()
            raise
        layer = Layer(diff_id, blob)
        parent_id = m.parent.id if m.parent else None
        existing = self.index.find_snapshot(parent_id, diff_id)
        if existing is not None:
            if compression is None:
                self.index.add_layer(layer)
                self.index.add_lazy(existing.id, diff_id, epoch)
            self.abort(m)
            return self._to_snapshot(existing), layer
        return self._install_syncing(m, synced, parent_id, layer, stats.size, compression is None, epoch), layer

    def _install_syncing(self, m: MutableSnapshot, synced: SyncFs, parent: int | None, layer: Layer, size: int,
                         lazy: bool, epoch: int | None) -> Snapshot:
        """Row ('pending', naming ``m``'s locked temp dir) → rename into snapshots/<id>/fs once the sync has its
        files open → back to the build, which may use the snapshot at once; a thread marks the row ready when
        the files are on disk and only then drops the temp dir (whose lock keeps other processes' recovery
        away from the pending row meanwhile). `settle` waits for it; a crash before leaves a pending row that
        the next open removes, as for any commit cut short."""
        snap_id = self.index.insert_pending(parent, layer.diff_id, layer, size, m.tmpdir.name, lazy, epoch)
        target = self.path(snap_id)
        try:
            target.parent.mkdir()
            os.chmod(m.upper, 0o755)
            synced.opened.wait()
            os.rename(m.upper, target)
        except BaseException:
            shutil.rmtree(target.parent, ignore_errors=True)
            self.index.delete_snapshot(snap_id)
            raise
        tmpdir, fd = m.tmpdir, m.lock_fd
        assert fd is not None
        m.lock_fd = None  # the temp dir and its lock now belong to the settling thread
        with self._settle_lock:
            self._settling[snap_id] = Background(self._mark_ready, snap_id, synced, tmpdir, fd)
        return Snapshot(snap_id, parent, layer.diff_id, size, target)

    def _mark_ready(self, snap_id: int, synced: SyncFs, tmpdir: Path, fd: int) -> None:
        try:
            synced.wait()
            self.index.mark_ready(snap_id)
        except BaseException as exc:  # kept for settle(), which raises it
            self._failed[snap_id] = exc
            return
        self._drop_temp(tmpdir, fd)

    def settle(self) -> None:
        """Wait until every snapshot this process committed is on disk and ready; the first one that could not
        be written is removed and its StoreError raised."""
        with self._settle_lock:
            pending, self._settling = self._settling, {}
        first: BaseException | None = None
        for snap_id, finisher in sorted(pending.items()):
            finisher.join()
            exc = self._failed.pop(snap_id, None)
            if exc is not None:
                self.delete(snap_id)
                first = first or exc
        if first is not None:
            raise first

    def is_settling(self, snap_id: int) -> bool:
        """Committed by this process, its files still being written out (usable here, not yet ready)."""
        return snap_id in self._settling

    def _install(self, fs: Path, tmpdir: Path, parent: int | None, layer: Layer, size: int,
                 lazy: bool = False, epoch: int | None = None) -> Snapshot:
        """Row ('pending') → rename into snapshots/<id>/fs → row 'ready'."""
        snap_id = self.index.insert_pending(parent, layer.diff_id, layer, size, tmpdir.name, lazy, epoch)
        target = self.path(snap_id)
        try:
            target.parent.mkdir()
            os.chmod(fs, 0o755)
            os.rename(fs, target)
            self.index.mark_ready(snap_id)
        except BaseException:
            shutil.rmtree(target.parent, ignore_errors=True)
            self.index.delete_snapshot(snap_id)
            raise
        return Snapshot(snap_id, parent, layer.diff_id, size, target)

    def import_layer(self, parent: Snapshot | None, blob: Descriptor) -> Snapshot:
        return self.import_layers(parent, [blob])[-1]

    def import_layers(self, parent: Snapshot | None, blobs: list[Descriptor], fetch: Fetch | None = None,
                      workers: int = UNPACKERS) -> list[Snapshot]:
        """Snapshots of ``blobs`` stacked in order over ``parent``, one per blob. Those already in the store
        (same parent, same diff_id) are reused; the rest are unpacked side by side, ``workers`` at a time
        (decompression, hashing and file writes release the GIL), then installed in order. If one fails the
        others stop at their next read, nothing of the batch is kept, and its error is raised. A blob not in the
        store is read from ``fetch(blob, stop)`` while it is unpacked and stored on the way (see `_unpack`)."""
        self.settle()  # this process's own snapshots are ready, so they are found and reused
        done: list[Snapshot] = []
        parent_id = parent.id if parent else None
        for blob in blobs:  # the reused prefix: a layer over a new snapshot cannot be in the store yet
            known = self.index.diff_id_for(blob.digest)
            row = self.index.find_snapshot(parent_id, known) if known is not None else None
            if row is None:
                break
            done.append(self._to_snapshot(row))
            parent_id = row.id
        todo = blobs[len(done):]
        if not todo:
            return done
        unpacked = self._unpack_all(todo, fetch, workers)
        try:
            for blob, (d, _, stats) in zip(todo, unpacked):
                layer = Layer(stats.diff_id, replace(blob, digest=Digest(blob.digest)))
                row = self.index.find_snapshot(parent_id, stats.diff_id)  # installed meanwhile by another build
                snap = self._to_snapshot(row) if row is not None else \
                    self._install(d / "fs", d, parent_id, layer, stats.size)
                done.append(snap)
                parent_id = snap.id
        finally:
            for d, fd, _ in unpacked:
                self._drop_temp(d, fd)
        return done

    def _unpack_all(self, blobs: list[Descriptor], fetch: Fetch | None = None,
                    workers: int = UNPACKERS) -> list[tuple[Path, int, UnpackStats]]:
        """(temp dir holding fs/, its lock fd, stats) per blob, in order; all temp dirs dropped on error."""
        from cache.tasks import each  # lazy: saves <1 ms at start-up (its modules are loaded by then)

        return each(blobs, lambda blob, stop: self._unpack(blob, stop, fetch), workers=workers,
                    name="pybuild-unpack", undo=lambda made: self._drop_temp(made[0], made[1]))

    def _unpack(self, blob: Descriptor, stop: threading.Event,
                fetch: Fetch | None = None) -> tuple[Path, int, UnpackStats]:
        # lazy: saves ~12 ms at start-up
        from cache.compress import decompressed
        from cache import unpack

        d, fd = self._temp_dir("i")
        try:
            fs = d / "fs"
            fs.mkdir(mode=0o755)
            if fetch is not None and not self.blobs.has(blob.digest):
                return d, fd, self._unpack_fetched(blob, fs, fetch(blob, stop), stop)
            raw = self.blobs.open(blob.digest)
            try:
                tar = decompressed(raw, str(blob.digest), blob.media_type)
                stats = unpack.unpack_layer(StopReading(tar, stop), fs, self.limits, self.blobs.size(blob.digest))
            finally:
                raw.close()  # verifies whatever the decompressor left unread
            return d, fd, stats
        except StoreError as e:
            self._drop_temp(d, fd)
            if type(e) is not StoreError or str(blob.digest) in e.message:
                raise
            raise StoreError(f"layer {blob.digest}: {e.message}", path=e.path) from e
        except BaseException:
            self._drop_temp(d, fd)
            raise

    def _unpack_fetched(self, blob: Descriptor, fs: Path, source: ByteReader, stop: threading.Event) -> UnpackStats:
        """Unpack a blob while it streams in from ``source`` (which raises at its end unless the bytes are the
        blob's) and keep it: the blob's temp file is renamed into place only once the source has reached its end
        and the store's own hash agrees. A layer that fails to unpack is read to its end first, so that damaged
        bytes are reported as the source reports them rather than as whatever the damage did to the tar."""
        # lazy: saves ~12 ms at start-up
        from cache.compress import decompressed
        from cache import unpack

        temp = self.blobs.temp()
        tee = unpack.TeeReader(source, temp)
        try:
            try:
                tar = decompressed(tee, str(blob.digest), blob.media_type)
                stats = unpack.unpack_layer(StopReading(tar, stop), fs, self.limits, blob.size)
            except StoreError:
                tee.drain()  # raises the source's error when the bytes were not the blob's
                raise
            tee.drain()
            stored = temp.finish(self.blobs)
        except BaseException:
            temp.discard()
            raise
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        if stored.digest != blob.digest:
            raise StoreError(f"layer {blob.digest}: the bytes fetched hash to {stored.digest}")
        return stats

    # --- deletion and recovery -------------------------------------------------------------
    def delete(self, snap_id: int) -> None:
        """Forget a snapshot: row first (a dir without a row is garbage), then the files."""
        self.index.delete_snapshot(snap_id)
        src = self.dir / str(snap_id)
        if src.exists():
            doomed = self.tmp / f"d-{secrets.token_hex(6)}"
            os.rename(src, doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    def recover(self) -> None:
        """Clean up after killed processes; safe while other processes use the store."""
        on_disk = [e.name for e in os.scandir(self.dir) if e.name.isdigit()]  # before reading rows
        rows = self.index.snapshot_states()
        for sid, (state, tmp) in rows.items():
            if state == "pending" and not self._writer_alive(tmp):
                shutil.rmtree(self.dir / str(sid), ignore_errors=True)
                self.index.delete_snapshot(sid)
        for name in on_disk:
            if int(name) not in rows:
                shutil.rmtree(self.dir / name, ignore_errors=True)
        for prefix in ("m-", "i-", "d-"):
            locks.clean_stale(self.tmp, prefix)

    def _writer_alive(self, tmp_name: str | None) -> bool:
        if not tmp_name:
            return False
        lockfile = self.tmp / (tmp_name + locks.LOCK_SUFFIX)
        fd = locks.try_lock(lockfile)
        if fd is None:
            return lockfile.exists()
        locks.release(fd)
        return False
