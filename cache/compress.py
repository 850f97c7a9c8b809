"""Layer compression: tar bytes in, (diff_id, compressed blob) out, in one streaming pass.

`LayerSink` is the file object `layertar.write_layer` writes into. Every byte is fed to a sha256
(the layer's ``diff_id``) and to a `Compressor`, whose output goes into a `TempBlob` that
hashes it again (the blob digest) and writes it around the page cache, both on a thread of its
own (`cache.directio`). Memory use is constant in the layer size.

Both cores are used: the compressors run worker threads (zstd's own, or the pigz-style gzip
in `cache.pgzip`), and the diff_id is hashed on a thread of its own once a layer is large enough
to pay for it (hashlib and the compressors release the GIL on large buffers).

Compressors are looked up by name in `COMPRESSORS` (their media types are
`cache.model.LAYER_MEDIA_TYPES`); `GzipCompressor` (one thread) stays as the reference the parallel
one is tested against. Output is deterministic for equal input: gzip gets a fixed header (mtime 0,
no file name, OS 255 "unknown", as Go's compress/gzip); zstd uses multi-threaded mode with a fixed
job size, whose output does not depend on the number of workers.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, cast

import zstandard
from zlib_ng import gzip_ng, zlib_ng

from cache.blobs import BlobStore, TempBlob
from cache.tarsink import CHUNK, DiffSink
from cache.errors import Interrupted, StoreError
from cache.pgzip import ParallelGzipCompressor, gzip_header
from cache.model import (
    MEDIA_TYPE_LAYER_GZIP,
    ByteReader,
    MEDIA_TYPE_LAYER_ZSTD,
    Descriptor,
    Digest,
    declared_compression,
    media_type_for,
    sniffed_media_type,
)

BUFFER = 256 * 1024
ZSTD_JOB_SIZE = 4 << 20  # zstd's default for level 3 is 8 MiB per job and worker: 4 MiB halves peak memory


class Compressor(Protocol):
    """A streaming compressor: `compress` may buffer, `flush` ends the stream (called once)."""

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class GzipCompressor:
    """Deterministic single-member gzip (RFC 1952) around raw deflate (zlib-ng's, as `cache.pgzip`)."""

    def __init__(self, level: int = 6) -> None:
        self._deflate = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS, 9)
        self._crc = 0
        self._size = 0
        self._header: bytes | None = gzip_header(level)

    def compress(self, data: bytes) -> bytes:
        self._crc = zlib_ng.crc32(data, self._crc)
        self._size += len(data)
        out = self._deflate.compress(data)
        if self._header is not None:
            out, self._header = self._header + out, None
        return out

    def flush(self) -> bytes:
        head = self.compress(b"")
        trailer = struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)
        return head + self._deflate.flush(zlib_ng.Z_FINISH) + trailer


class ZstdCompressor:
    """zstd with worker threads (all CPUs by default).

    zstd's multi-threaded mode gives the same bytes for any number of workers >= 1 (but not
    the same as single-threaded mode, threads=0), so at least one worker is always used. The job
    size is pinned (`ZSTD_JOB_SIZE`): the bytes depend on it, and it bounds memory per worker.
    """

    def __init__(self, level: int = 3, threads: int | None = None) -> None:
        workers = max(1, threads if threads is not None else (os.cpu_count() or 1))
        params = zstandard.ZstdCompressionParameters.from_level(level, threads=workers, job_size=ZSTD_JOB_SIZE)
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

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


# name -> factory (the names of LAYER_MEDIA_TYPES). Swap an entry to change the writer for that format.
COMPRESSORS: dict[str, Callable[[], Compressor]] = {
    "gzip": ParallelGzipCompressor,
    "zstd": ZstdCompressor,
    "uncompressed": Identity,
}


class LayerSink(DiffSink):
    """Writable stream: tar bytes → sha256 (diff_id) → compressor → temp blob (blob digest).

    Small writes are gathered into `CHUNK`-sized pieces; large ones (tarfile copies file data in
    1 MiB reads) pass through without a copy."""

    def __init__(self, blobs: BlobStore, compression: str = "gzip") -> None:
        super().__init__()
        self.media_type = media_type_for(compression)
        factory = COMPRESSORS[compression]
        self._blobs = blobs
        self._compressor = factory()
        self._tmp: TempBlob | None = blobs.temp()

    @property
    def compressed_size(self) -> int:
        """Compressed bytes written to the blob so far (progress reports)."""
        return self._tmp.size if self._tmp is not None else 0

    def _feed(self, chunk: bytes) -> None:
        if self._tmp is None:
            raise StoreError("layer stream written after finish or discard")
        self._diff.update(chunk)
        out = self._compressor.compress(chunk)
        if out:
            self._tmp.write(out)

    def finish(self) -> tuple[Digest, Descriptor]:
        """End the stream and store the blob; returns (diff_id, blob descriptor)."""
        self._gathered()
        self._open = False
        assert self._tmp is not None
        self._tmp.write(self._compressor.flush())
        diff_id = self._diff.hexdigest()
        tmp, self._tmp = self._tmp, None
        desc = tmp.finish(self._blobs, self.media_type)
        return Digest.from_hex(diff_id), desc

    def discard(self) -> None:
        """Abandon the blob and stop the worker threads; idempotent."""
        self._diff.close()
        stop = getattr(self._compressor, "close", None)
        if stop is not None:
            stop()
        if self._tmp is not None:
            self._tmp.discard()
            self._tmp = None


def recompress(blobs: BlobStore, src: BinaryIO, compression: str,
               cancelled: Callable[[], bool] | None = None, name: str = "") -> tuple[Digest, Descriptor]:
    """Stream a stored layer blob (any format; ``name`` for errors) into a new blob in ``compression``;
    returns (diff_id of the content, new blob). ``cancelled`` is polled per 1 MiB; once it says stop,
    `Interrupted` is raised and nothing is kept."""
    sink = LayerSink(blobs, compression)
    try:
        tar = decompressed(src, name)
        while chunk := tar.read(CHUNK):
            if cancelled is not None and cancelled():
                raise Interrupted("layer re-compression interrupted")
            sink.write(chunk)
        return sink.finish()
    except BaseException:
        sink.discard()
        raise


def decompressed(f: BinaryIO | io.RawIOBase, name: str = "", media_type: str | None = None) -> ByteReader:
    """Wrap a (raw) blob stream so it yields the tar bytes. A blob declared uncompressed is read as it is (an
    uncompressed tar can begin with either magic); one declared gzip or zstd is decoded so when it starts with that
    magic, else by what its bytes are, as containerd's DecompressStream reads every layer (a tool that labels a
    plain tar gzip); one of unknown type (None, or not a layer type) is sniffed. The caller's diff_id check over
    the result stays the guard. A stream that does not decode raises `StoreError` naming the layer (``name``)."""
    buffered: Any = f if hasattr(f, "peek") else io.BufferedReader(cast(io.RawIOBase, f), BUFFER)
    declared = declared_compression(media_type)
    kind = media_type_for(declared) if declared == "uncompressed" else sniffed_media_type(buffered.peek(4)[:4])
    if kind == MEDIA_TYPE_LAYER_GZIP:
        reader = gzip_ng.GzipFile(fileobj=buffered, mode="rb")
        errors = (EOFError, cast(type[BaseException], zlib_ng.error), gzip_ng.BadGzipFile)  # the stub: an instance
        return _Decoding(reader, "gzip", name, errors)
    if kind == MEDIA_TYPE_LAYER_ZSTD:
        dctx = zstandard.ZstdDecompressor()
        reader = dctx.stream_reader(buffered, read_across_frames=True, closefd=True)
        return _Decoding(reader, "zstd", name, (zstandard.ZstdError,))
    return cast(ByteReader, buffered)


class _Decoding:
    """A decompressing reader whose decoding errors become one `StoreError` naming the layer."""

    def __init__(self, reader: Any, kind: str, name: str, errors: tuple[type[BaseException], ...]) -> None:
        self._reader = reader
        self._kind = kind
        self._name = name
        self._errors = errors

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._reader.read(n)
            return data
        except self._errors as e:
            layer = f"{self._kind} layer {self._name}".rstrip()
            raise StoreError(f"{layer} does not decompress: {e}; the blob is damaged or not {self._kind}: "
                             "pull or build it again") from e

    def close(self) -> None:
        self._reader.close()
