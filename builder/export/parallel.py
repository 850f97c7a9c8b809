"""Blob transfers side by side (pulls and pushes, builder/export/pull.py, push.py): `cache.tasks.each` runs them,
`Meter` counts each one's bytes for the progress view and stops it once another failed."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cache.tasks import Stopped, each

__all__ = ["Meter", "Progress", "Stopped", "each"]
PROGRESS_EVERY = 0.1  # seconds between two progress reports of one blob (its first and last are always sent)

Progress = Callable[[str, int, int], None]  # (blob digest, bytes so far, size), called from transfer threads


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
