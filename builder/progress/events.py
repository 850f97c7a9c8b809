"""Build progress as a stream of events (STYLE.md habit 11). `solve` emits them; renderers in display.py."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Union

from builder.progress.text import human_size as human_size
from builder.progress.text import summary_line


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A step began (or is about to be looked up in the cache)."""

    number: int  # 1-based, in plan order
    title: str  # "[stage 2/5] RUN make"
    ts: float = field(default_factory=_now)
    total: int = 0  # steps in the plan, when known


@dataclass(frozen=True, slots=True)
class StepCached:
    """A step's result came from the cache."""

    number: int
    reason: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class StepLog:
    """Output of a running step, one chunk of one stream."""

    number: int
    stream: str  # "stdout" | "stderr"
    text: str
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class StepDone:
    """A step finished."""

    number: int
    elapsed: float
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A step failed; `error` is the message for the user."""

    number: int
    elapsed: float
    error: str
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class StepCancelled:
    """The step was stopped (Ctrl-C, or another step failed) before it finished."""

    number: int
    elapsed: float
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class StepExplain:
    """--explain-cache: why a step hit or missed."""

    number: int
    text: str
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """Bytes of one blob moving to or from a registry: a base image's layer pulled while the build is planned
    (before any step starts), or the built image's blobs pushed after it. First with ``current`` 0, then every
    ~0.1 s, last with ``current == total``."""

    action: str  # "pull" | "push"
    image: str  # the reference as FROM or -t/name= gives it
    layer: str  # the blob's digest
    current: int
    total: int
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class TaskStarted:
    """Work outside the steps began, shown as BuildKit shows its internal vertices: `[internal] load metadata for
    IMAGE` while a base image is resolved in its registry."""

    task: str  # unique in the build and short: "meta-1"
    title: str  # "[internal] load metadata for docker.io/library/alpine:latest"
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """Bytes a task (or a step, ``task`` = "#N") has handled so far: ``what`` says which ("writing layer")."""

    task: str
    what: str
    current: int
    total: int = 0  # 0: not known in advance
    written: int = 0  # bytes written out, when they differ from those read (a layer: compressed)
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class TaskDone:
    """A task ended; ``error`` is set when it failed (or was interrupted)."""

    task: str
    elapsed: float
    error: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """The last event of a build that stored an image: steps run and cached, total time and the image's size."""

    steps: int
    ran: int
    cached: int
    elapsed: float
    size: int  # the image's layers as stored, bytes
    ts: float = field(default_factory=_now)
    compressed: bool = True  # False: some layer is stored as its plain tar (compressed at export)


@dataclass(frozen=True, slots=True)
class BuildWarning:
    """A build check (builder/checks.py) found a rule violation: BuildKit's lint warning, with its location."""

    rule: str
    message: str
    url: str
    file: str
    line: int
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class BuildDone:
    """The build ended: the image's id and manifest digest, and how long it took."""

    image_id: str
    manifest_digest: str
    elapsed: float
    ts: float = field(default_factory=_now)


Event = Union[StepStarted, StepCached, StepLog, StepDone, StepFailed, StepCancelled, StepExplain, TransferProgress,
              BuildWarning, BuildDone, TaskStarted, TaskProgress, TaskDone, BuildSummary]
Sink = Callable[[Event], None]


def summary_text(event: BuildSummary) -> str:
    return summary_line(event.steps, event.ran, event.cached, event.elapsed, event.size, event.compressed)


def progress_text(event: TaskProgress) -> str:
    """`writing layer 120MB tarred, 45MB compressed`, `load build context 12MB / 50MB`."""
    sizes = human_size(event.current) + (f" / {human_size(event.total)}" if event.total else "")
    if event.written:
        return f"{event.what} {sizes} tarred, {human_size(event.written)} compressed"
    return f"{event.what} {sizes}"


def to_json(event: Event) -> str:
    return json.dumps({"type": type(event).__name__, **asdict(event)}, ensure_ascii=False)
