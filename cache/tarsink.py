"""The hashing half of a layer writer: tar bytes in, their sha256 (the ``diff_id``) and size out, no blob.

`DiffSink` is what a lazy commit (`SnapshotStore.commit` with compression None) writes the layer tar into:
small writes are gathered into `CHUNK`-sized pieces, large ones pass through without a copy, and the hash moves
onto a thread of its own once the layer is large enough (hashlib releases the GIL), so reading the files and
hashing overlap. `cache.compress.LayerSink` adds the compressor and the blob. Kept apart from cache.compress so
that a lazy commit does not load the compressors (zstandard, zlib-ng: ~3 ms of imports).
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Callable
from typing import Any

from cache.errors import Interrupted, StoreError
from cache.model import MEDIA_TYPE_LAYER_TAR, Descriptor, Digest

SMALL_WRITE = 64 << 10  # writes below this (tar headers, small files) are gathered first
CHUNK = 1 << 20  # ... into chunks of this size
HASH_THREAD_AFTER = 4 << 20  # smaller layers are hashed inline: a thread costs more than it saves


class _DiffHasher:
    """sha256 of the uncompressed stream, moved onto its own thread once `HASH_THREAD_AFTER` bytes
    have gone by, so hashing overlaps compression instead of adding to it. Chunks must be bytes
    (immutable: the caller cannot change them while they wait in the queue)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._inline = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, chunk: bytes) -> None:
        if self._queue is not None:
            self._queue.put(chunk)
            return
        self._hash.update(chunk)
        self._inline += len(chunk)
        if self._inline >= HASH_THREAD_AFTER:
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._run, name="pybuild-diff-id", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Stop the thread (after the queued chunks); idempotent."""
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class DiffSink(io.RawIOBase):
    """A writable tar stream that is only hashed: `finish` describes the layer as its uncompressed tar, whose
    digest is the diff_id (`cache.layerblob` makes blobs of it when they are needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.media_type = MEDIA_TYPE_LAYER_TAR
        self._diff = _DiffHasher()
        self._small = bytearray()
        self._open = True
        self.uncompressed_size = 0

    def writable(self) -> bool:
        return True

    @property
    def compressed_size(self) -> int:
        """Compressed bytes written so far (progress reports): none, the tar is only hashed."""
        return 0

    def tell(self) -> int:
        """Bytes written so far (tarfile asks once; the stream is not seekable)."""
        return self.uncompressed_size

    def write(self, data: Any) -> int:
        n = len(data)
        self.uncompressed_size += n
        if n >= SMALL_WRITE:
            self._gathered()
            self._feed(data if type(data) is bytes else bytes(data))
        elif n:
            self._small += data
            if len(self._small) >= CHUNK:
                self._gathered()
        return n

    def _gathered(self) -> None:
        if self._small:
            self._feed(bytes(self._small))
            self._small.clear()

    def _feed(self, chunk: bytes) -> None:
        if not self._open:
            raise StoreError("layer stream written after finish or discard")
        self._diff.update(chunk)

    def finish(self) -> tuple[Digest, Descriptor]:
        """End the stream; returns (diff_id, the tar's descriptor: its digest is the diff_id)."""
        self._gathered()
        self._open = False
        diff_id = Digest.from_hex(self._diff.hexdigest())
        return diff_id, Descriptor(MEDIA_TYPE_LAYER_TAR, diff_id, self.uncompressed_size)

    def discard(self) -> None:
        """Stop the hashing thread; idempotent."""
        self._open = False
        self._diff.close()


class Stoppable(io.RawIOBase):
    """Passes writes to ``sink`` until ``cancelled()`` says stop: tarfile writes at most 1 MiB at a time,
    so a commit of any size notices a cancel within one chunk's compression time. ``progress(tarred,
    compressed)`` hears the bytes after each write."""

    def __init__(self, sink: DiffSink, cancelled: Callable[[], bool] | None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        super().__init__()
        self._sink = sink
        self._cancelled = cancelled or (lambda: False)
        self._progress = progress

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._sink.tell()

    def write(self, data: Any) -> int:
        if self._cancelled():
            raise Interrupted("layer commit interrupted")
        n = self._sink.write(data)
        if self._progress is not None:
            self._progress(self._sink.tell(), self._sink.compressed_size)
        return n
