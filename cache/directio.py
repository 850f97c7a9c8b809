"""Writing a new file around the page cache (O_DIRECT), for blobs.

A blob is written once and then mostly left alone (exported by hard link, read again only
when pushed or unpacked). Buffered writes copy every byte into fresh page-cache pages, which on
this kind of machine (a VM) costs about as much CPU as hashing the bytes twice: writing 778 MiB
took 1.55 core-seconds of kernel time buffered, 0.07 through O_DIRECT (issue 6's zstd export).

`DirectWriter` gathers writes into page-aligned buffers of `BLOCK` bytes; whole buffers are
written with O_DIRECT set on the descriptor by a thread of its own (started at the first full
block), so the caller goes on compressing while the disk works. The tail (less than a block) is
written at `close` after clearing O_DIRECT again, so the file gets exactly the bytes written.
A filesystem that refuses O_DIRECT (EINVAL from fcntl or from the first write) is written
through the page cache instead: same bytes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import queue
import threading
from typing import Protocol

BLOCK = 4 << 20  # bytes per O_DIRECT write: a multiple of any logical block size (512 or 4096)
BUFFERS = 3  # one being filled, up to two queued or being written


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


class DirectWriter:
    """Sequential writer of a new, empty file open for writing on ``fd`` (not closed here).

    ``hasher`` (optional, e.g. a hashlib sha256) is updated with every byte in file order; whole
    blocks are hashed on the writer thread, off the caller's path. Errors of the background
    writes are raised by the next `write` or by `close`."""

    def __init__(self, fd: int, hasher: Hasher | None = None) -> None:
        self.fd = fd
        self.hasher = hasher
        self.direct = _set_direct(fd, True)
        self._current: memoryview | None = None
        self._fill = 0
        self._made = 0  # buffers mapped so far (at most BUFFERS)
        self._free: queue.Queue[memoryview] = queue.Queue()
        self._full: queue.Queue[memoryview | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None
        self._dropping = False

    def write(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if not self.direct:
            if self.hasher is not None:
                self.hasher.update(data)
            _write_all(self.fd, data)
            return
        src = memoryview(data).cast("B")
        while src:
            if self._current is None:
                self._current = self._next_buffer()
            n = min(len(src), BLOCK - self._fill)
            self._current[self._fill:self._fill + n] = src[:n]
            self._fill += n
            src = src[n:]
            if self._fill == BLOCK:
                self._hand_over()

    def close(self, *, keep: bool = True) -> None:
        """Wait for the queued blocks, then write the tail (through the page cache: it is not a
        whole block) and release the buffers; the caller fsyncs and closes the descriptor.
        ``keep=False`` (the file is being dropped) skips the tail and does not raise."""
        try:
            if not keep:
                self._dropping = True  # the thread skips what is still queued
            self._stop()
            if keep:
                if self._error is not None:
                    raise self._error
                if self._current is not None and self._fill:
                    with self._current[:self._fill] as tail:
                        if self.hasher is not None:
                            self.hasher.update(tail)
                        _set_direct(self.fd, False)
                        _write_all(self.fd, tail)
        finally:
            self._fill = 0
            self._release()

    def _next_buffer(self) -> memoryview:
        if self._made < BUFFERS and self._free.empty():
            self._made += 1
            return memoryview(mmap.mmap(-1, BLOCK))  # page-aligned, as O_DIRECT wants
        buf = self._free.get()
        if self._error is not None:
            raise self._error
        return buf

    def _hand_over(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pybuild-blob-write", daemon=True)
            self._thread.start()
        assert self._current is not None
        self._full.put(self._current)
        self._current, self._fill = None, 0

    def _run(self) -> None:
        while (buf := self._full.get()) is not None:
            if self._error is None and not self._dropping:
                try:
                    self._write_block(buf)
                except OSError as e:
                    self._error = e
            self._free.put(buf)

    def _write_block(self, buf: memoryview) -> None:
        if self.hasher is not None:
            self.hasher.update(buf)
        try:
            _write_all(self.fd, buf)
        except OSError as e:
            if e.errno != errno.EINVAL or os.lseek(self.fd, 0, os.SEEK_CUR) != 0:
                raise
            # The filesystem took the flag but not the write: this and later blocks go
            # through the page cache (still in order, from this thread).
            _set_direct(self.fd, False)
            _write_all(self.fd, buf)

    def _stop(self) -> None:
        if self._thread is not None:
            self._full.put(None)
            self._thread.join()
            self._thread = None

    def _release(self) -> None:
        """Drop the buffers (unmapped once the last view of each is gone)."""
        self._current = None
        while not self._free.empty():
            self._free.get_nowait()


def _set_direct(fd: int, on: bool) -> bool:
    """Set or clear O_DIRECT on ``fd``; returns whether it is set now."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    wanted = flags | os.O_DIRECT if on else flags & ~os.O_DIRECT
    if wanted != flags:
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, wanted)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            return False
    return on


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
