"""What the machine and the libraries can do on the same bytes the builds handle (issue 6's "limits").

All in MB/s (10^6 bytes) of input, single pass over an in-memory sample, best of `repeat` passes. The
compressors use exactly pybuild's settings (cache/compress.py): gzip level 6 as a raw deflate stream,
zstd level 3 with one worker thread per CPU and 4 MiB jobs; single-thread zstd is reported too. gzip's
limit is the zlib module's deflate on one thread (issue 6's "single-thread zlib"); pybuild deflates
with zlib-ng (cache/pgzip.py), so zlib-ng on one thread is measured too: the export over that one is
what using both cores alone buys.
"""
from __future__ import annotations

import hashlib
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import zstandard
from zlib_ng import zlib_ng

GZIP_LEVEL = 6
ZSTD_LEVEL = 3
CHUNK = 1 << 20
ZSTD_JOB_SIZE = 4 << 20  # as cache/compress.py (bench runs against any --src tree, so no import)


@dataclass(frozen=True, slots=True)
class Limits:
    sample_bytes: int
    sha256: float
    zlib_gzip6: float
    zlib_ng_gzip6: float
    zstd3_threads: float
    zstd3_single: float
    disk_write_fsync: float
    cpus: int

    def as_dict(self) -> dict:
        return {"sample_bytes": self.sample_bytes, "cpus": self.cpus, "MBps": {
            "sha256": self.sha256, "zlib_gzip6": self.zlib_gzip6,
            "zlib_ng_gzip6": self.zlib_ng_gzip6, "zstd3_threads": self.zstd3_threads,
            "zstd3_single": self.zstd3_single, "disk_write_fsync": self.disk_write_fsync}}


def throughput(data: bytes, fn: Callable[[memoryview], object], repeat: int) -> float:
    view = memoryview(data)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn(view)
        best = min(best, time.perf_counter() - started)
    return len(data) / best / 1e6


def hash_pass(view: memoryview) -> None:
    h = hashlib.sha256()
    for i in range(0, len(view), CHUNK):
        h.update(view[i:i + CHUNK])
    h.digest()


def _deflater(module) -> Callable[[memoryview], None]:
    def deflate(view: memoryview) -> None:
        c = module.compressobj(GZIP_LEVEL, module.DEFLATED, -module.MAX_WBITS, 9)
        for i in range(0, len(view), CHUNK):
            c.compress(view[i:i + CHUNK])
        c.flush()
    return deflate


_deflate = _deflater(zlib)
_deflate_ng = _deflater(zlib_ng)


def _zstd(threads: int) -> Callable[[memoryview], None]:
    def compress(view: memoryview) -> None:
        params = (zstandard.ZstdCompressionParameters.from_level(ZSTD_LEVEL, threads=threads, job_size=ZSTD_JOB_SIZE)
                  if threads else zstandard.ZstdCompressionParameters.from_level(ZSTD_LEVEL))
        c = zstandard.ZstdCompressor(compression_params=params).compressobj()
        for i in range(0, len(view), CHUNK):
            c.compress(view[i:i + CHUNK])
        c.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
    return compress


def libraries(compression: str) -> list[tuple[str, Callable[[memoryview], None]]]:
    """(label, one pass) of the libraries to hold pybuild's exporter against for ``compression``; the
    first is the target's limit."""
    if compression == "gzip":
        return [("zlib level 6, 1 thread", _deflate), ("zlib-ng level 6, 1 thread", _deflate_ng)]
    return [("zstandard level 3, threaded", _zstd(max(1, os.cpu_count() or 1)))]


def disk_write(directory: Path, data: bytes) -> float:
    """dd-like: write the sample in 1 MiB blocks to a new file, fsync, close; MB/s."""
    path = directory / "disk-write.bin"
    view = memoryview(data)
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(0, len(view), CHUNK):
            os.write(fd, view[i:i + CHUNK])
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - started
    path.unlink()
    return len(data) / elapsed / 1e6


def measure(data: bytes, scratch: Path, repeat: int = 2) -> Limits:
    cpus = os.cpu_count() or 1
    return Limits(sample_bytes=len(data), sha256=throughput(data, hash_pass, repeat),
                  zlib_gzip6=throughput(data, _deflate, repeat),
                  zlib_ng_gzip6=throughput(data, _deflate_ng, repeat),
                  zstd3_threads=throughput(data, _zstd(max(1, cpus)), repeat),
                  zstd3_single=throughput(data, _zstd(0), repeat),
                  disk_write_fsync=max(disk_write(scratch, data) for _ in range(repeat)), cpus=cpus)
