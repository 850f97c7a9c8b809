"""Work side by side: `each` runs one function per item on a few threads, stops the rest at the first failure,
and raises that failure once every thread has ended (layer imports here, blob transfers in builder/export)."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from cache.model import ByteReader

T = TypeVar("T")
R = TypeVar("R")


class Stopped(Exception):
    """Raised by a piece of work at its next check once another one failed (or the caller was interrupted)."""


def each(items: Sequence[T], work: Callable[[T, threading.Event], R], *, workers: int, name: str,
         undo: Callable[[R], None] | None = None) -> list[R]:
    """``work(item, stop)`` for every item, at most ``workers`` threads at once (named ``name``-N); the results
    in the items' order. The first exception (other than `Stopped`) sets ``stop``, keeps the queued items from
    starting, and is raised when every thread has ended; Ctrl-C in the caller does the same. Then ``undo`` gets
    each result that was made, so nothing of a batch that failed is kept."""
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    from concurrent.futures import ThreadPoolExecutor, wait

    stop = threading.Event()
    if len(items) <= 1:
        return [work(item, stop) for item in items]
    failures: list[BaseException] = []
    skipped = object()

    def run(item: T) -> Any:
        if stop.is_set():
            return skipped
        try:
            return work(item, stop)
        except Stopped:
            return skipped
        except BaseException as exc:
            failures.append(exc)  # list.append is atomic: the first one appended happened first
            stop.set()
            return skipped

    pool = ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix=name)
    futures = [pool.submit(run, item) for item in items]
    waited = False
    try:
        wait(futures)
        waited = True
    finally:  # Ctrl-C: the queued ones never start, the running ones end at their next check
        if not waited:
            stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        made = [r for f in futures if not f.cancelled() and (r := f.result()) is not skipped]
        if undo is not None and (not waited or failures):
            for result in made:
                undo(result)
    if failures:
        raise failures[0]
    return made


class Background:
    """``target(*args)`` on a daemon thread that starts without the caller waiting for it: threading.Thread.start
    waits until the new thread runs, and then for the GIL that thread holds, up to a switch interval (5 ms) each
    time, on the step's clock (3-30 ms per build measured with a settle and a sync thread per commit). `join` as
    Thread's; an exception of ``target`` goes to sys.unraisablehook (the targets here catch their own)."""

    def __init__(self, target: Callable[..., object], *args: Any) -> None:
        import _thread  # lazy: saves <1 ms at start-up (loaded by threading)

        self._done = threading.Event()
        _thread.start_new_thread(self._run, (target, args))

    def _run(self, target: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            target(*args)
        finally:
            self._done.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until ``target`` has returned (at most ``timeout`` s); whether it has."""
        return self._done.wait(timeout)


class StopReading:
    """A layer stream that raises `cache.tasks.Stopped` at its next read once ``stop`` is set."""

    def __init__(self, stream: ByteReader, stop: threading.Event) -> None:
        self._stream = stream
        self._stop = stop

    def read(self, n: int = -1) -> bytes:
        if self._stop.is_set():
            raise Stopped("layer import stopped")
        return self._stream.read(n)
