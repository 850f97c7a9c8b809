"""The tty display's model: `BuildView` folds progress events into per-step state (pure, no terminal).

builder/progress/tty.py renders it; the view keeps per step what buildx's display keeps (state, timer, the last
output lines, transfer and task rows).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from builder.progress import events as ev

LIVE_LOG_LINES = 6  # output lines shown under a running step (buildkit shows a 6-line vt100 window)
KEPT_LOG_LINES = 20  # kept per step for the failure summary
MAX_LINE = 1000  # characters kept of one output line; wider than any terminal
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
RUNNING, CACHED, DONE, ERROR, CANCELED = "running", "cached", "done", "error", "canceled"


def clean_line(text: str) -> str:
    """What a terminal would leave of one output line: the text after the last `\\r`, no escapes or controls."""
    if "\r" in text:
        parts = [p for p in text.split("\r") if p]
        text = parts[-1] if parts else ""
    return _ESCAPES.sub("", text.replace("\t", "    "))


@dataclass(frozen=True, slots=True)
class StepView:
    """One step as the display shows it."""

    number: int
    title: str
    started: float
    state: str = RUNNING
    elapsed: float | None = None  # set once the step finished
    logs: tuple[str, ...] = ()  # complete lines, the last KEPT_LOG_LINES
    partial: str = ""  # an unterminated last line
    note: str = ""  # the last StepExplain text
    error: str = ""
    detail: str = ""  # the last TaskProgress: "writing layer 12.3MB"


@dataclass(slots=True)
class BuildView:
    """Every step seen so far, in start order, and how the build ended. Mutated only by `apply`."""

    steps: dict[int, StepView] = field(default_factory=dict)
    pulls: dict[tuple[str, str], StepView] = field(default_factory=dict)  # base image layers pulled (image, digest)
    pushes: dict[tuple[str, str], StepView] = field(default_factory=dict)  # blobs of the built image pushed
    tasks: dict[str, StepView] = field(default_factory=dict)  # `[internal] load metadata for IMAGE`, ...
    summary: ev.BuildSummary | None = None
    first_ts: float | None = None
    last_ts: float | None = None
    done: ev.BuildDone | None = None
    failed: int | None = None  # number of the first failed step
    total: int = 0  # steps in the plan (StepStarted.total), known before they have all started

    @property
    def finished(self) -> bool:
        """Built, or failed with no other step still running (those end as CANCELED within ~0.05 s)."""
        if self.done is not None:
            return True
        return self.failed is not None and all(s.state != RUNNING for s in self.steps.values())

    def apply(self, event: ev.Event) -> None:
        """Fold one event in; events for steps never started are kept as if they had started then."""
        if self.first_ts is None:
            self.first_ts = event.ts
        self.last_ts = event.ts
        if isinstance(event, ev.BuildDone):
            self.done = event
            return
        if isinstance(event, ev.BuildWarning):
            return  # listed after the build by the CLI
        if isinstance(event, ev.BuildSummary):
            self.summary = event
            return
        if isinstance(event, (ev.TaskStarted, ev.TaskProgress, ev.TaskDone)):
            self._task(event)
            return
        if isinstance(event, ev.TransferProgress):
            rows = self.pulls if event.action == "pull" else self.pushes
            rows[(event.image, event.layer)] = _transfer_row(rows.get((event.image, event.layer)), event)
            return
        number = event.number
        step = self.steps.get(number)
        if isinstance(event, ev.StepStarted):
            self.steps[number] = StepView(number, event.title, event.ts)
            self.total = max(self.total, event.total)
            return
        if step is None:
            step = self.steps[number] = StepView(number, f"#{number}", event.ts)
        self.steps[number] = _advance(step, event)
        if isinstance(event, ev.StepFailed) and self.failed is None:
            self.failed = number


    def _task(self, event: ev.TaskStarted | ev.TaskProgress | ev.TaskDone) -> None:
        """A task is a row of its own; a step's bytes (task "N") are a line under that step's row."""
        if isinstance(event, ev.TaskStarted):
            self.tasks[event.task] = StepView(0, event.title, event.ts)
            return
        if event.task in self.tasks:
            self.tasks[event.task] = self._advanced(self.tasks[event.task], event)
        elif (number := _number(event.task)) in self.steps:
            self.steps[number] = self._advanced(self.steps[number], event)

    @staticmethod
    def _advanced(row: StepView, event: ev.TaskProgress | ev.TaskDone) -> StepView:
        if isinstance(event, ev.TaskProgress):
            return replace(row, detail=ev.progress_text(event))
        return replace(row, state=ERROR if event.error else DONE, elapsed=event.elapsed, error=event.error, detail="")


def _number(task: str) -> int:
    return int(task) if task.isdigit() else -1


def _transfer_row(row: StepView | None, event: ev.TransferProgress) -> StepView:
    """A blob pulled or pushed shown as a step row: `pull IMAGE sha256:0123456789ab 12.58MB / 31.46MB`."""
    started = row.started if row is not None else event.ts
    title = f"{event.action} {event.image} {event.layer[:19]} {ev.human_size(event.current)} / {ev.human_size(event.total)}"
    if event.current < event.total:
        return StepView(0, title, started)
    return StepView(0, title, started, state=DONE, elapsed=event.ts - started)


def _advance(step: StepView, event: ev.Event) -> StepView:
    if isinstance(event, ev.StepCached):
        return replace(step, state=CACHED, elapsed=max(0.0, event.ts - step.started))
    if isinstance(event, ev.StepDone):
        return replace(step, state=DONE, elapsed=event.elapsed)
    if isinstance(event, ev.StepFailed):
        return replace(step, state=ERROR, elapsed=event.elapsed, error=event.error)
    if isinstance(event, ev.StepCancelled):
        return replace(step, state=CANCELED, elapsed=event.elapsed)
    if isinstance(event, ev.StepExplain):
        return replace(step, note=clean_line(event.text))
    if isinstance(event, ev.StepLog):
        return _add_output(step, event.text)
    return step


def _add_output(step: StepView, text: str) -> StepView:
    """Output arrives in chunks that need not end at a line break (buildkit `logsPartial`).

    A progress bar redraws one line with `\r` and may never end it: the unfinished line keeps only what a
    terminal would show, so it stays small however long the step runs."""
    pieces = (step.partial + text).split("\n")
    complete = [clean_line(p)[:MAX_LINE] for p in pieces[-KEPT_LOG_LINES - 1:-1]]
    logs = step.logs + tuple(complete) if complete else step.logs
    partial = pieces[-1]
    if "\r" in partial:
        head, _, tail = partial.rpartition("\r")
        partial = tail or clean_line(head) + "\r"  # "50%\r": shown until the next redraw arrives
    return replace(step, logs=logs[-KEPT_LOG_LINES:], partial=partial[-MAX_LINE:])
