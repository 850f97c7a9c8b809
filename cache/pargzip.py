"""Parallel gzip in the manner of pigz: one gzip member, deflated in independent blocks on all cores.

The input is cut into blocks of `BLOCK` bytes at fixed offsets (however the caller chunks its
writes). Each block is raw-deflated on a worker thread by a fresh compressor primed with the last
32 KiB of the previous block's input (``zdict``), so matches may still reach back across the
boundary and the output is within a fraction of a percent of one long deflate stream. Every block
but the last ends with a sync flush (an empty stored block, byte-aligned), the last with the final
block bit, so the pieces concatenate into one valid deflate stream. zlib drops the GIL while it
compresses, so threads really run in parallel.

The gzip trailer needs the CRC-32 of the whole input: each worker computes its block's CRC, and
`crc32_combine` joins them in order (zlib's GF(2) matrix method; Python's zlib module lacks it).

Deterministic: the header is fixed (mtime 0, no name, OS 255 "unknown"), block boundaries depend
only on byte offsets, and each block's bytes depend only on its input and dictionary, so the output
is the same for any number of threads and any chunking of the input.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache

BLOCK = 1 << 20
DICT = 32 * 1024  # deflate's window: the most a match can reach back
GZIP_MAGIC = b"\x1f\x8b"
_POLY = 0xEDB88320  # CRC-32, reflected


def _times(mat: tuple[int, ...], vec: int) -> int:
    """Matrix (32 columns as ints) times vector over GF(2)."""
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _square(mat: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_times(mat, column) for column in mat)


@lru_cache(maxsize=None)
def _zero_bytes_operator(k: int) -> tuple[int, ...]:
    """The linear map that advances a CRC-32 register over 2**k zero bytes."""
    if k == 0:
        one_bit = (_POLY,) + tuple(1 << n for n in range(31))
        return _square(_square(_square(one_bit)))  # 1 → 2 → 4 → 8 bits
    return _square(_zero_bytes_operator(k - 1))


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A+B from crc1 = crc32(A), crc2 = crc32(B) and len2 = len(B)."""
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _times(_zero_bytes_operator(k), crc1)
        len2 >>= 1
        k += 1
    return crc1 ^ crc2


def _deflate(level: int, block: bytes, zdict: bytes, last: bool) -> tuple[bytes, int]:
    """One block's raw deflate bytes and the block's CRC-32 (runs on a worker thread)."""
    if zdict:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    out = c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return out, zlib.crc32(block)


class ParallelGzipCompressor:
    """Streaming gzip on ``threads`` workers (default: one per CPU); `Compressor` protocol of
    cache.compress, plus `close` to abandon the stream. At most 2 × threads blocks are in flight,
    so memory is bounded by a few blocks whatever the stream length."""

    def __init__(self, level: int = 6, threads: int | None = None, block_size: int = BLOCK) -> None:
        if block_size < DICT:
            raise ValueError(f"block_size must be at least {DICT}")
        workers = max(1, threads if threads is not None else (os.cpu_count() or 1))
        self._level = level
        self._block = block_size
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(workers, thread_name_prefix="pybuild-gzip")
        self._inflight: deque[tuple[Future, int]] = deque()
        self._limit = 2 * workers
        self._pending = bytearray()
        self._zdict = b""
        self._crc = 0
        self._size = 0
        xfl = 2 if level == 9 else 4 if level == 1 else 0
        # magic, CM=deflate, FLG=0 (no name/comment/extra), MTIME=0, XFL, OS=255 (unknown)
        self._header: bytes | None = GZIP_MAGIC + bytes([8, 0, 0, 0, 0, 0, xfl, 255])

    def compress(self, data) -> bytes:
        pool = self._open()
        self._pending += data
        while len(self._pending) > self._block:  # strictly more: the last block must wait for flush
            with memoryview(self._pending) as view:
                block = bytes(view[:self._block])
            del self._pending[:self._block]
            self._submit(pool, block, last=False)
        return self._collect(wait_for=len(self._inflight) - self._limit)

    def flush(self) -> bytes:
        """The rest of the stream and the trailer; the pool is shut down."""
        pool = self._open()
        self._submit(pool, bytes(self._pending), last=True)
        self._pending = bytearray()
        out = self._collect(wait_for=len(self._inflight))
        self.close()
        return out + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)

    def close(self) -> None:
        """Abandon the stream: queued blocks are dropped, running ones finish in the background."""
        if self._pool is not None:
            for future, _ in self._inflight:
                future.cancel()
            self._inflight.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _open(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise ValueError("gzip stream already flushed or closed")
        return self._pool

    def _submit(self, pool: ThreadPoolExecutor, block: bytes, *, last: bool) -> None:
        self._inflight.append((pool.submit(_deflate, self._level, block, self._zdict, last), len(block)))
        self._zdict = block[-DICT:]

    def _collect(self, wait_for: int) -> bytes:
        """Output of the finished blocks at the head of the queue, in order, after waiting for the
        oldest ``wait_for`` ones."""
        parts = []
        if self._header is not None:
            parts.append(self._header)
            self._header = None
        while self._inflight and (wait_for > 0 or self._inflight[0][0].done()):
            future, length = self._inflight.popleft()
            deflated, crc = future.result()
            self._crc = crc32_combine(self._crc, crc, length)
            self._size += length
            parts.append(deflated)
            wait_for -= 1
        return b"".join(parts)
