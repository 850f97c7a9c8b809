"""Renderers of the progress event stream: plain (CI logs), quiet, rawjson, and tty (rich live view)."""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from builder.progress import events as ev
from builder.progress.text import printable


TRANSFER_LINE_EVERY = 1.0  # seconds between two plain lines of one blob in transit (first and last always shown)
TICK_FIRST, TICK_EVERY = 0.5, 1.0  # a running task's first `#meta-1 running 0.5s` line, then one a second


class PlainDisplay:
    """buildx-like plain output: `#N title`, `#N 0.123 log line`, `#N CACHED`, `#N DONE 0.5s`; layers of a base
    image being pulled (or of the image being pushed) as `#pull IMAGE sha256:0123456789ab 12.58MB / 31.46MB 1.2s`
    (`#push ...`; `done` at the end); a task (`#meta-1 [internal] load metadata for IMAGE`) with a line a second
    while it runs (`#meta-1 running 1.5s`, from a ticker thread), its bytes (`#meta-1 writing layer 12.3MB`) and
    `#meta-1 DONE 2.1s`; and the summary `#summary 2 steps run, ...` before `#done`."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.started: dict[int, float] = {}
        self.transfers: dict[tuple[str, str, str], tuple[float, float]] = {}  # → (first ts, last printed line's ts)
        self.partial: dict[tuple[int, str], tuple[str, float]] = {}  # (step, stream) → unfinished line, its start
        self.tasks: dict[str, tuple[float, float]] = {}  # running task → (start ts, last line's ts)
        self.progress: dict[str, float] = {}  # task → ts of its last bytes line
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.ticker: threading.Thread | None = None

    def __call__(self, event: ev.Event) -> None:
        with self.lock:
            if isinstance(event, (ev.TaskStarted, ev.TaskProgress, ev.TaskDone)):
                self._task(event)
            else:
                self._render(event)
            self.out.flush()

    def _render(self, event: ev.Event) -> None:
        w = self.out.write
        if isinstance(event, ev.StepStarted):
            self.started[event.number] = event.ts
            w(f"#{event.number} {printable(event.title)}\n")
        elif isinstance(event, ev.StepCached):
            w(f"#{event.number} CACHED\n")
        elif isinstance(event, ev.StepExplain):
            w(f"#{event.number} {printable(event.text)}\n")
        elif isinstance(event, ev.StepLog):
            self._log(event)
        elif isinstance(event, ev.StepDone):
            self._flush(event.number)
            w(f"#{event.number} DONE {event.elapsed:.1f}s\n")
        elif isinstance(event, ev.StepFailed):
            self._flush(event.number)
            w(f"#{event.number} ERROR: {printable(event.error)}\n")
        elif isinstance(event, ev.StepCancelled):
            self._flush(event.number)
            w(f"#{event.number} CANCELED\n")
        elif isinstance(event, ev.TransferProgress):
            self._transfer(event)
        elif isinstance(event, ev.BuildSummary):
            w(f"#summary {ev.summary_text(event)}\n")
        elif isinstance(event, ev.BuildDone):
            w(f"#done image {event.image_id} manifest {event.manifest_digest} in {event.elapsed:.1f}s\n")

    def close(self) -> None:
        """Stop the ticker; every event was written when it arrived."""
        self.closed.set()

    def _task(self, event: ev.TaskStarted | ev.TaskProgress | ev.TaskDone) -> None:
        w = self.out.write
        if isinstance(event, ev.TaskStarted):
            self.tasks[event.task] = (event.ts, event.ts)
            w(f"#{event.task} {event.title}\n")
            if self.ticker is None:
                self.ticker = threading.Thread(target=self._tick, name="pybuild-plain-ticker", daemon=True)
                self.ticker.start()
        elif isinstance(event, ev.TaskProgress):
            last = self.progress.get(event.task)
            if last is not None and event.ts - last < TRANSFER_LINE_EVERY and event.current != event.total:
                return
            self.progress[event.task] = event.ts
            w(f"#{event.task} {ev.progress_text(event)}\n")
        else:
            self.tasks.pop(event.task, None)
            self.progress.pop(event.task, None)
            w(f"#{event.task} ERROR: {event.error}\n" if event.error else f"#{event.task} DONE {event.elapsed:.1f}s\n")

    def _tick(self) -> None:
        """While a task runs, a line a second: its elapsed time (no other event may arrive for a minute)."""
        while not self.closed.wait(0.1):
            now = time.time()
            with self.lock:
                if self.closed.is_set():
                    return
                for task, (started, printed) in list(self.tasks.items()):
                    due = started + TICK_FIRST if printed == started else printed + TICK_EVERY
                    if now >= due:
                        self.tasks[task] = (started, now)
                        self.out.write(f"#{task} running {now - started:.1f}s\n")
                        self.out.flush()


    def _transfer(self, event: ev.TransferProgress) -> None:
        which = (event.action, event.image, event.layer)
        first, printed = self.transfers.get(which, (event.ts, None))
        done = event.current == event.total
        if printed is not None and not done and event.ts - printed < TRANSFER_LINE_EVERY:
            return
        self.transfers[which] = (first, event.ts)
        sizes = f"{ev.human_size(event.current)} / {ev.human_size(event.total)}"
        elapsed = f" {event.ts - first:.1f}s" if printed is not None else ""
        self.out.write(f"#{event.action} {event.image} {event.layer[:19]} {sizes}{elapsed}{' done' if done else ''}\n")

    def _line(self, number: int, text: str, ts: float) -> None:
        offset = ts - self.started.get(number, ts)
        self.out.write(f"#{number} {offset:.3f} {text.rstrip(chr(13))}\n")

    def _log(self, event: ev.StepLog) -> None:
        """Whole lines only, per stream: a line split across chunks is joined and stamped with its first chunk's
        time."""
        key = (event.number, event.stream)
        pending, pending_ts = self.partial.pop(key, ("", event.ts))
        lines = (pending + event.text).split("\n")
        rest = lines.pop()
        for i, line in enumerate(lines):
            self._line(event.number, line, pending_ts if i == 0 and pending else event.ts)
        if rest:
            self.partial[key] = (rest, pending_ts if pending and not lines else event.ts)

    def _flush(self, number: int) -> None:
        for stream in ("stdout", "stderr"):
            pending = self.partial.pop((number, stream), None)
            if pending is not None:
                self._line(number, *pending)


class QuietDisplay:
    def __call__(self, event: ev.Event) -> None:
        return None

    def close(self) -> None:
        return None


class RawJsonDisplay:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self.lock:
            self.out.write(ev.to_json(event) + "\n")
            self.out.flush()

    def close(self) -> None:
        return None


def make_display(mode: str, out: TextIO | None = None):
    """auto = plain unless stderr is a terminal (then tty)."""
    out = out or sys.stderr
    requested = mode
    if mode == "auto":
        mode = "tty" if out.isatty() else "plain"
    if mode == "quiet":
        return QuietDisplay()
    if mode == "rawjson":
        return RawJsonDisplay(out)
    if mode == "tty":
        try:
            from builder.progress.tty import TtyDisplay  # lazy: saves ~29 ms at start-up
        except ImportError:
            return PlainDisplay(out)
        return TtyDisplay(out, force_terminal=True if requested == "tty" else None)
    return PlainDisplay(out)
