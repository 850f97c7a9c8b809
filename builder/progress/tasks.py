"""Progress of the work outside the steps, as BuildKit shows its internal vertices (events.TaskStarted/Done)."""
from __future__ import annotations

import contextlib
import itertools
import time
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from builder.progress import events as ev

LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"  # cache.model's MEDIA_TYPE_LAYER_TAR (progress imports no cache)

Digester = Callable[[Sequence[Any]], list[Any]]  # Store.file_digests: [(path, stat)] -> [digest]

_TASKS = itertools.count(1)


@contextlib.contextmanager
def task(sink: ev.Sink, prefix: str, title: str) -> Iterator[str]:
    """A task around a block: TaskStarted now, TaskDone at its end (with the error when it raised); yields its id."""
    name, started = f"{prefix}-{next(_TASKS)}", time.monotonic()
    sink(ev.TaskStarted(name, title))
    try:
        yield name
    except KeyboardInterrupt:
        sink(ev.TaskDone(name, time.monotonic() - started, "interrupted"))
        raise
    except BaseException as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        sink(ev.TaskDone(name, time.monotonic() - started, message.splitlines()[0]))
        raise
    sink(ev.TaskDone(name, time.monotonic() - started))


def resolving(sink: ev.Sink, image: str) -> contextlib.AbstractContextManager[str]:
    """BuildKit's `[internal] load metadata for IMAGE` around a base image's resolve (and pull)."""
    return task(sink, "meta", f"[internal] load metadata for {image}")


def summary(results: dict[int, Any], record: Any, elapsed: float) -> ev.BuildSummary:
    """The build's summary from the solver's results (StepResult: steps run and cached) and the stored image's
    layers (cache.ImageRecord; progress imports nothing else of pybuild, tests/unit/test_layering.py)."""
    cached = sum(1 for result in results.values() if result.cached)
    size = sum(layer.blob.size for layer in record.layers)
    compressed = all(layer.blob.media_type != LAYER_TAR for layer in record.layers)
    return ev.BuildSummary(len(results), len(results) - cached, cached, elapsed, size, compressed=compressed)


LAYER_QUIET, LAYER_EVERY = 1.0, 0.5  # a layer written for longer than a second: its bytes, twice a second


def layer_meter(sink: ev.Sink, number: int, clock: Callable[[], float] = time.monotonic) -> Callable[[int, int], None]:
    """store.commit's progress for step ``number``: `writing layer 120MB tarred, 45MB compressed` events once the
    layer has taken a second (a small layer says nothing), then every half second (buildx's "exporting layers")."""
    last: list[float] = []  # when the last event went out (first: as if LAYER_EVERY before the quiet second ends)

    def progress(tarred: int, compressed: int) -> None:
        now = clock()
        if not last:
            last.append(now + LAYER_QUIET - LAYER_EVERY)
        elif now - last[0] >= LAYER_EVERY:
            last[0] = now
            sink(ev.TaskProgress(str(number), "writing layer", tarred, written=compressed))
    return progress


@contextlib.contextmanager
def exporting_layers(sink: ev.Sink, clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[[int, int], None]]:
    """Layers compressed for an export (a layer is stored as its plain tar until then): once that has taken a
    second, buildx's `exporting layers` task with the bytes of the layer being compressed, twice a second."""
    started = clock()
    name, last = "", started  # the task's name once it is shown

    def progress(tarred: int, compressed: int) -> None:
        nonlocal name, last
        now = clock()
        if not name:
            if now - started < LAYER_QUIET:
                return
            name = f"export-{next(_TASKS)}"
            sink(ev.TaskStarted(name, "exporting layers", ts=time.time() - (now - started)))
        if now - last >= LAYER_EVERY:
            last = now
            sink(ev.TaskProgress(name, "compressing layer", tarred, written=compressed))
    try:
        yield progress
    except BaseException as exc:
        if name:
            sink(ev.TaskDone(name, clock() - started, error=str(exc) or type(exc).__name__))
        raise
    if name:
        sink(ev.TaskDone(name, clock() - started))


HASH_BATCH = 32 << 20  # bytes of context files hashed per call once a context is large enough to show it


def metered_digests(digests: Digester, sink: ev.Sink, number: int,
                    clock: Callable[[], float] = time.monotonic) -> Digester:
    """The store's bulk file hasher for step ``number``'s context sources: files of more than HASH_BATCH bytes in
    all are hashed in batches, and once that has taken a second each batch reports `hashing context 1.2GB / 2GB`
    (files the store's stat memo knows cost nothing and say nothing)."""
    def bulk(items: Sequence[Any]) -> list[Any]:
        total = sum(st.st_size for _, st in items)
        if total <= HASH_BATCH:
            return digests(items)
        started, done, batched, first = clock(), 0, 0, 0
        found: list[Any] = []
        for end, (_, st) in enumerate(items, 1):
            batched += st.st_size
            if batched >= HASH_BATCH or end == len(items):
                found += digests(items[first:end])
                done, batched, first = done + batched, 0, end
                if clock() - started >= LAYER_QUIET:
                    sink(ev.TaskProgress(str(number), "hashing context", done, total))
        return found
    return bulk


def read_context(stream: BinaryIO, sink: ev.Sink, clock: Callable[[], float] = time.monotonic) -> bytes:
    """The context tar from stdin (`pybuild -`); a read that takes more than a second is BuildKit's `[internal]
    load build context` task, with `transferring context 120MB` twice a second."""
    chunks: list[bytes] = []
    total, started = 0, clock()
    name, last, reported = None, started, 0
    while chunk := stream.read(1 << 20):
        chunks.append(chunk)
        total += len(chunk)
        now = clock()
        if name is None and now - started >= LAYER_QUIET:
            name = f"context-{next(_TASKS)}"
            sink(ev.TaskStarted(name, "[internal] load build context", ts=time.time() - (now - started)))
        if name is not None and now - last >= LAYER_EVERY:
            last, reported = now, total
            sink(ev.TaskProgress(name, "transferring context", total))
    if name is not None:
        if reported != total:
            sink(ev.TaskProgress(name, "transferring context", total))
        sink(ev.TaskDone(name, clock() - started))
    return b"".join(chunks)
