"""Progress of the work outside the steps, as BuildKit shows its internal vertices (events.TaskStarted/Done)."""
from __future__ import annotations

import contextlib
import itertools
import time
from typing import Iterator

from builder.progress import events as ev

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


def summary(results: dict, record, elapsed: float) -> ev.BuildSummary:
    """The build's summary from the solver's results (steps run and cached) and the stored image's layers."""
    cached = sum(1 for result in results.values() if result.cached)
    size = sum(layer.blob.size for layer in record.layers)
    return ev.BuildSummary(len(results), len(results) - cached, cached, elapsed, size)
