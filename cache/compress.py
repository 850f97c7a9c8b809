"""Layer compression: tar bytes in, (diff_id, compressed blob) out, in one streaming pass.

`LayerSink` is the file object `layertar.write_layer` writes into. Every byte is fed to a sha256
(the layer's ``diff_id``) and to a `Compressor`, whose output goes into a `TempBlob` that
hashes it again (the blob digest). Memory use is constant (one buffer of `BUFFER` bytes).

Compressors are looked up by name in `COMPRESSORS`, so a parallel (pigz-style) gzip writer can
replace `GzipCompressor` without touching callers. Output is deterministic for equal input:
gzip gets a fixed header (mtime 0, no file name, OS 255 "unknown", as Go's compress/gzip);
zstd uses multi-threaded mode, whose output does not depend on the number of workers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol

import zstandard

from cache.blobs import BlobStore, TempBlob
from cache.errors import StoreError
from cache.model import (
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_TAR,
    MEDIA_TYPE_LAYER_ZSTD,
    Descriptor,
    Digest,
)

BUFFER = 256 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Compressor(Protocol):
    """A streaming compressor: `compress` may buffer, `flush` ends the stream (called once)."""

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class GzipCompressor:
    """Deterministic single-member gzip (RFC 1952) around raw deflate."""

    def __init__(self, level: int = 6) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
        self._crc = 0
        self._size = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        # magic, CM=deflate, FLG=0 (no name/comment/extra), MTIME=0, XFL, OS=255 (unknown)
        self._header: bytes | None = GZIP_MAGIC + bytes([8, 0, 0, 0, 0, 0, xfl, 255])

    def compress(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._deflate.compress(data)
        if self._header is not None:
            out, self._header = self._header + out, None
        return out

    def flush(self) -> bytes:
        head = self.compress(b"")
        trailer = struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)
        return head + self._deflate.flush(zlib.Z_FINISH) + trailer


class ZstdCompressor:
    """zstd with worker threads (all CPUs by default).

    zstd's multi-threaded mode gives the same bytes for any number of workers >= 1 (but not
    the same as single-threaded mode, threads=0), so at least one worker is always used.
    """

    def __init__(self, level: int = 3, threads: int | None = None) -> None:
        workers = max(1, threads if threads is not None else (os.cpu_count() or 1))
        cctx = zstandard.ZstdCompressor(level=level, threads=workers)
        self._obj = cctx.compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class Identity:
    """No compression (media type ``...layer.v1.tar``)."""

    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


# name -> (factory, blob media type). Swap an entry to change the writer for that format.
COMPRESSORS: dict[str, tuple[Callable[[], Compressor], str]] = {
    "gzip": (GzipCompressor, MEDIA_TYPE_LAYER_GZIP),
    "zstd": (ZstdCompressor, MEDIA_TYPE_LAYER_ZSTD),
    "uncompressed": (Identity, MEDIA_TYPE_LAYER_TAR),
}


class LayerSink(io.RawIOBase):
    """Writable stream: tar bytes → sha256 (diff_id) → compressor → temp blob (blob digest)."""

    def __init__(self, blobs: BlobStore, compression: str = "gzip") -> None:
        super().__init__()
        try:
            factory, self.media_type = COMPRESSORS[compression]
        except KeyError:
            raise StoreError(f"unknown compression {compression!r}: want one of "
                             f"{', '.join(sorted(COMPRESSORS))}") from None
        self._blobs = blobs
        self._compressor = factory()
        self._diff = hashlib.sha256()
        self._buf = bytearray()
        self._tmp: TempBlob | None = blobs.temp()
        self.uncompressed_size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes written so far (tarfile asks once; the stream is not seekable)."""
        return self.uncompressed_size

    def write(self, data) -> int:  # type: ignore[override]
        n = len(data)
        self._diff.update(data)
        self._buf += data
        self.uncompressed_size += n
        if len(self._buf) >= BUFFER:
            self._drain()
        return n

    def _drain(self) -> None:
        assert self._tmp is not None, "write after finish"
        if self._buf:
            self._tmp.write(self._compressor.compress(bytes(self._buf)))
            self._buf.clear()

    def finish(self) -> tuple[Digest, Descriptor]:
        """End the stream and store the blob; returns (diff_id, blob descriptor)."""
        self._drain()
        assert self._tmp is not None
        self._tmp.write(self._compressor.flush())
        tmp, self._tmp = self._tmp, None
        desc = tmp.finish(self._blobs, self.media_type)
        return Digest.from_hex(self._diff.hexdigest()), desc

    def discard(self) -> None:
        """Abandon the blob; idempotent."""
        if self._tmp is not None:
            self._tmp.discard()
            self._tmp = None


def decompressed(f: BinaryIO) -> BinaryIO:
    """Wrap a (raw) blob stream so it yields the tar bytes; the format is sniffed from magic."""
    buffered = io.BufferedReader(f, BUFFER) if not hasattr(f, "peek") else f
    head = buffered.peek(4)[:4]  # type: ignore[attr-defined]
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if head.startswith(ZSTD_MAGIC):
        dctx = zstandard.ZstdDecompressor()
        return dctx.stream_reader(buffered, read_across_frames=True, closefd=True)  # type: ignore[return-value]
    return buffered  # type: ignore[return-value]
