"""Blob transfers side by side: `each` runs one function per item on a few threads, stops the rest at the first
failure, and raises that failure once every thread has ended (pulls and pushes, builder/export/pull.py, push.py)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
PROGRESS_EVERY = 0.1  # seconds between two progress reports of one blob (its first and last are always sent)

Progress = Callable[[str, int, int], None]  # (blob digest, bytes so far, size), called from transfer threads


class Stopped(Exception):
    """Raised by a transfer at its next read once another one failed (or the command was interrupted)."""


class Meter:
    """Counts a blob's bytes and reports them to ``progress``: 0 at once, then at most every PROGRESS_EVERY
    seconds, and when ``total`` is reached. ``stop`` (optional) makes `add` raise `Stopped`."""

    def __init__(self, progress: Progress | None, digest: str, total: int,
                 stop: threading.Event | None = None) -> None:
        self.progress, self.digest, self.total, self.stop = progress, digest, total, stop
        self.count = 0
        self._reported = time.monotonic()
        if progress is not None:
            progress(digest, 0, total)

    def check(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped(self.digest)

    def add(self, n: int) -> None:
        self.count += n
        if self.progress is not None and n:
            now = time.monotonic()
            if self.count == self.total or now - self._reported >= PROGRESS_EVERY:
                self._reported = now
                self.progress(self.digest, self.count, self.total)


def each(items: Sequence[T], work: Callable[[T, threading.Event], R], *, workers: int, name: str) -> list[R]:
    """``work(item, stop)`` for every item, at most ``workers`` at once; the results in the items' order. The
    first exception (other than `Stopped`) sets ``stop``, keeps the queued items from starting, and is raised
    when every thread has ended; Ctrl-C in the caller does the same."""
    from concurrent.futures import ThreadPoolExecutor, wait

    stop = threading.Event()
    if len(items) <= 1:
        return [work(item, stop) for item in items]
    failures: list[BaseException] = []

    def run(item: T):
        if stop.is_set():
            return None
        try:
            return work(item, stop)
        except Stopped:
            return None
        except BaseException as exc:
            failures.append(exc)  # list.append is atomic: the first one appended happened first
            stop.set()
            return None

    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix=name) as pool:
        futures = [pool.submit(run, item) for item in items]
        try:
            wait(futures)
        finally:  # Ctrl-C: the queued ones never start, the running ones end at their next read
            if not all(f.done() for f in futures):
                stop.set()
                for f in futures:
                    f.cancel()
    if failures:
        raise failures[0]
    return [f.result() for f in futures]
