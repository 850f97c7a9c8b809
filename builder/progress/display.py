"""Renderers of the progress event stream: plain (CI logs), quiet, rawjson, and tty (rich live view)."""
from __future__ import annotations

import sys
import threading
from typing import TextIO

from builder.progress import events as ev


class PlainDisplay:
    """buildx-like plain output: `#N title`, `#N 0.123 log line`, `#N CACHED`, `#N DONE 0.5s`."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.started: dict[int, float] = {}
        self.lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        with self.lock:
            self._render(event)
            self.out.flush()

    def _render(self, event: ev.Event) -> None:
        w = self.out.write
        if isinstance(event, ev.StepStarted):
            self.started[event.number] = event.ts
            w(f"#{event.number} {event.title}\n")
        elif isinstance(event, ev.StepCached):
            w(f"#{event.number} CACHED\n")
        elif isinstance(event, ev.StepExplain):
            w(f"#{event.number} {event.text}\n")
        elif isinstance(event, ev.StepLog):
            offset = event.ts - self.started.get(event.number, event.ts)
            for line in event.text.splitlines():
                w(f"#{event.number} {offset:.3f} {line}\n")
        elif isinstance(event, ev.StepDone):
            w(f"#{event.number} DONE {event.elapsed:.1f}s\n")
        elif isinstance(event, ev.StepFailed):
            w(f"#{event.number} ERROR: {event.error}\n")
        elif isinstance(event, ev.BuildDone):
            w(f"#done image {event.image_id} manifest {event.manifest_digest} in {event.elapsed:.1f}s\n")

    def close(self) -> None:
        """Nothing to finish: every event is written when it arrives."""


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
    if mode == "auto":
        mode = "tty" if out.isatty() else "plain"
    if mode == "quiet":
        return QuietDisplay()
    if mode == "rawjson":
        return RawJsonDisplay(out)
    if mode == "tty":
        try:
            from builder.progress.tty import TtyDisplay
        except ImportError:
            return PlainDisplay(out)
        return TtyDisplay(out)
    return PlainDisplay(out)
