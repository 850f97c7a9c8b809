"""Parallel gzip in the manner of pigz: one gzip member whose deflate stream is made on all cores.

Format. The output is a single RFC 1952 member: a fixed 10-byte header (magic, CM=8, FLG=0,
MTIME=0, XFL = 2 for level 9 / 4 for level 1 / else 0, OS=255 "unknown"), one raw deflate stream,
and the trailer (CRC-32 and input size mod 2**32, little endian). The input is cut into blocks of
``block_size`` bytes at fixed offsets; each block is raw-deflated on a worker thread by a fresh
``zlib_ng.compressobj`` whose preset dictionary (``zdict``) is the 32 KiB of input just before the
block (deflate's window: the farthest a match can reach back), so compression stays within a
fraction of a percent of one long stream. Every block but the last ends with ``Z_SYNC_FLUSH``,
which closes the open deflate block and appends an empty stored block, leaving the output
byte-aligned and not final; the last block ends with ``Z_FINISH`` (final-block bit set). The
pieces therefore concatenate into one valid deflate stream. An empty input gives just the final
empty block (``03 00``).

Deflate is zlib-ng's (python-zlib-ng, the same API as the zlib module): at level 6 this compressor
ran 2.7x faster on real files (a tar of /usr/lib/python3.11, /usr/bin, /usr/share/perl) than with
the zlib module, for 2.45% larger output (1.7% smaller on bench/'s half-random, half-text data).
Each worker also computes its block's CRC-32; the main thread joins them in order with zlib-ng's
``crc32_combine`` (which Python's zlib module does not expose). zlib-ng drops the GIL while it
deflates and while it checksums large buffers, so the threads really run in parallel; the main
thread only cuts blocks and collects results.

Deterministic. The header carries no time or name; block boundaries depend only on byte offsets
(not on how `compress` calls are cut); a block's bytes depend only on its input, its dictionary,
whether it is last, the level and the deflate implementation (zlib-ng, pinned to one release series
in pyproject.toml because compressed bytes may change between releases). So the output is the same
for any thread count and any chunking of the input.

Memory is constant in the stream length: at most ``2 * threads`` blocks are in flight; `compress`
waits for the oldest one when the pool is that far behind.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from zlib_ng import zlib_ng

from cache.model import GZIP_MAGIC

DICT = 32 * 1024  # deflate's window
BLOCK_SIZE = 1 << 20


# --- the compressor ----------------------------------------------------------------------------

def _deflate_block(level: int, block: Any, zdict: bytes | None, last: bool) -> tuple[bytes, int]:
    """Worker: (raw deflate of ``block`` ending in a sync flush, or final if ``last``; its crc32)."""
    if zdict:
        c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS, 9, zdict=zdict)
    else:
        c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS, 9)
    head = c.compress(block)
    tail = c.flush(zlib_ng.Z_FINISH if last else zlib_ng.Z_SYNC_FLUSH)
    return (head + tail if head else tail), zlib_ng.crc32(block)


def gzip_header(level: int) -> bytes:
    """The fixed gzip header: magic, CM=deflate, FLG=0, MTIME=0, XFL, OS=255 (unknown)."""
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return GZIP_MAGIC + bytes([8, 0, 0, 0, 0, 0, xfl, 255])


class ParallelGzipCompressor:
    """Deterministic single-member gzip, deflated in ``block_size`` blocks on ``threads`` workers.

    `compress` may buffer and returns the compressed output that is ready, in order; `flush` ends
    the stream (once) and returns the rest with the trailer; `close` abandons the stream."""

    def __init__(self, level: int = 6, threads: int | None = None, block_size: int = BLOCK_SIZE) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, not {block_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, not {threads}")
        zlib_ng.compressobj(level, zlib_ng.DEFLATED, -zlib_ng.MAX_WBITS, 9)  # a bad level fails here, not in a worker
        self._level = level
        self._threads = threads or os.cpu_count() or 1
        self._max_pending = 2 * self._threads
        self._block_size = block_size
        self._pool: ThreadPoolExecutor | None = None  # started with the first full block
        self._futures: deque[tuple[Future[tuple[bytes, int]], int]] = deque()  # (future, input length)
        self._buf = bytearray()  # input of the next block, < block_size bytes between calls
        self._dict = b""  # the last DICT bytes of input before the next block
        self._ready: list[bytes] = [gzip_header(level)]  # output not yet returned, in order
        self._crc = 0
        self._size = 0
        self._done = False

    def compress(self, data: Any) -> bytes:
        if self._done:
            raise ValueError("compress() after flush() or close()")
        view = memoryview(data).cast("B")
        n = len(view)
        self._size += n
        pos = 0
        bs = self._block_size
        if self._buf:
            pos = min(bs - len(self._buf), n)
            self._buf += view[:pos]
            if len(self._buf) == bs:
                block, self._buf = self._buf, bytearray()  # handed over: never written again
                self._submit(block, False)
        # Whole blocks straight from the caller's buffer: no copy if it is immutable bytes.
        immutable = type(data) is bytes
        while n - pos >= bs:
            piece = view[pos:pos + bs]
            self._submit(piece if immutable else bytes(piece), False)
            pos += bs
        if pos < n:
            self._buf += view[pos:]
        self._drain(wait_all=False)
        return self._take()

    def flush(self) -> bytes:
        if self._done:
            raise ValueError("flush() after flush() or close()")
        block, self._buf = self._buf, bytearray()
        if self._pool is None:  # a short stream: no threads needed
            out, crc = _deflate_block(self._level, block, self._dict or None, True)
            self._add_crc(crc, len(block))
            self._ready.append(out)
        else:
            self._submit(block, True)
            self._drain(wait_all=True)
        self._done = True
        self._shutdown(wait=True)
        self._ready.append(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        return self._take()

    def close(self) -> None:
        """Abandon the stream: cancel queued blocks and stop the pool without waiting for the
        running ones (at most one block per thread finishes in the background); idempotent."""
        self._done = True
        for fut, _ in self._futures:
            fut.cancel()
        self._futures.clear()
        self._ready.clear()
        self._buf = bytearray()
        self._shutdown(wait=False)

    def __enter__(self) -> ParallelGzipCompressor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals

    def _submit(self, block: Any, last: bool) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="pybuild-pgzip")
        fut = self._pool.submit(_deflate_block, self._level, block, self._dict or None, last)
        self._futures.append((fut, len(block)))
        if len(block) >= DICT:
            self._dict = bytes(block[-DICT:])
        else:  # blocks smaller than the window: the dictionary spans several of them
            self._dict = (self._dict + bytes(block))[-DICT:]
        if not last:
            self._drain(wait_all=False)  # bounds the blocks in flight, however large the caller's chunk

    def _drain(self, wait_all: bool) -> None:
        """Move the output of finished blocks at the head of the queue to `_ready`, in order.
        Waits for the oldest block while `_max_pending` are in flight, or for all if ``wait_all``."""
        futures = self._futures
        while futures and (wait_all or len(futures) >= self._max_pending or futures[0][0].done()):
            fut, length = futures.popleft()
            out, crc = fut.result()
            self._add_crc(crc, length)
            self._ready.append(out)

    def _take(self) -> bytes:
        ready = self._ready
        if not ready:
            return b""
        out = ready[0] if len(ready) == 1 else b"".join(ready)
        ready.clear()
        return out

    def _add_crc(self, crc: int, length: int) -> None:
        self._crc = zlib_ng.crc32_combine(self._crc, crc, length)

    def _shutdown(self, wait: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
