"""The live progress view for terminals, after buildx's tty display (buildkit util/progress/progressui/display.go).

    [+] Building 12.3s (5/9)
     => CACHED [1/9] FROM busybox                                    0.0s
     => DONE   [2/9] COPY app /app                                   0.4s
     => ⠹      [3/9] RUN make                                        2.1s
     => => # cc -o app main.c

Three parts: `BuildView` (progress/ttyview.py) folds events into per-step state (pure, no terminal); `render_lines` turns a view into
lines of a given width and height (pure; oldest finished steps are dropped first when the screen is too short, as
buildkit `wrapHeight` does); `TtyDisplay` is the event sink that drives a rich `Live` on a Console over `out`.

Threading: the solver calls the sink from worker threads while rich's refresh thread renders. The view is guarded by
one lock, taken for short periods by both; the sink never calls into `Live` while holding it (rich holds its own lock
while rendering, so the opposite order would deadlock).
"""
from __future__ import annotations

import atexit
import sys
import threading
import time
from typing import Callable, TextIO

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from builder.progress import events as ev
from builder.progress.ttyview import CACHED, CANCELED, ERROR, LIVE_LOG_LINES, RUNNING, BuildView, StepView, clean_line

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
REFRESH_PER_SECOND = 8.0
STATE_WIDTH = 8  # "CANCELED"


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.1f}s"


def _row(state: str, title: str, right: str, width: int, style: str) -> Text:
    """` => STATE  title ....... right`, exactly one line of `width` cells."""
    left = f" => {state:<{STATE_WIDTH}} "
    room = max(1, width - cell_len(left) - cell_len(right) - 1)
    name = Text(title.replace("\t", " "), no_wrap=True)
    name.truncate(room, overflow="ellipsis")
    line = Text(left, style=style, no_wrap=True)
    line.append_text(name)
    line.append(" " * max(1, width - cell_len(left) - name.cell_len - cell_len(right)))
    line.append(right)
    line.stylize(style)
    line.truncate(width)
    return line


def _dim(prefix: str, text: str, width: int, style: str = "dim") -> Text:
    line = Text(prefix + text, style=style, no_wrap=True)
    line.truncate(max(1, width), overflow="ellipsis")
    return line


def _step_block(step: StepView, now: float, width: int, final: bool) -> list[Text]:
    if step.state == RUNNING:
        frame = "…" if final else SPINNER[int(now * 10) % len(SPINNER)]
        lines = [_row(frame, step.title, _seconds(now - step.started), width, "")]
        if step.detail and not final:
            lines.append(_dim(" => => ", step.detail, width))
        tail = list(step.logs[-LIVE_LOG_LINES:])
        if step.partial.strip() and not final:
            tail = (tail + [clean_line(step.partial)])[-LIVE_LOG_LINES:]
        lines += [_dim(" => => # ", line, width) for line in ([] if final else tail)]
    elif step.state == ERROR:
        lines = [_row("ERROR", step.title, _seconds(step.elapsed or 0.0), width, "bold red")]
        first = step.error.splitlines()[0] if step.error.strip() else ""
        if first:
            lines.append(_dim(" => => ! ", first, width, "red"))
    elif step.state == CANCELED:
        lines = [_row("CANCELED", step.title, _seconds(step.elapsed or 0.0), width, "yellow")]
    else:
        label, style = ("CACHED", "blue") if step.state == CACHED else ("DONE", "blue")
        lines = [_row(label, step.title, _seconds(step.elapsed or 0.0), width, style)]
    if step.note:
        lines.append(_dim(" => => ", step.note, width))
    return lines


def _header(view: BuildView, now: float, width: int) -> Text:
    if view.done is not None:
        elapsed, suffix = view.done.elapsed, " FINISHED"
    else:
        end = view.last_ts if view.failed is not None and view.last_ts is not None else now
        elapsed, suffix = end - (view.first_ts if view.first_ts is not None else now), ""
    completed = sum(1 for s in view.steps.values() if s.state != RUNNING)
    total = max(view.total, len(view.steps))
    line = Text(f"[+] Building {_seconds(elapsed)} ({completed}/{total}){suffix}", style="bold",
                no_wrap=True)
    line.truncate(max(1, width))
    return line


def _fit(blocks: list[tuple[StepView, list[Text]]], budget: int) -> list[Text]:
    """Drop the oldest finished steps, then trim running steps' output, until `budget` lines remain."""
    total = sum(len(b) for _, b in blocks)
    kept = list(blocks)
    for item in list(kept):
        if total <= budget:
            break
        if item[0].state != RUNNING:
            kept.remove(item)
            total -= len(item[1])
    if total > budget:  # running steps alone are too many: keep their rows only, the newest ones
        kept = [(s, b[:1]) for s, b in kept][-max(0, budget):]
    return [line for _, block in kept for line in block]


def _failure_summary(step: StepView, width: int) -> list[Text]:
    """buildkit `printErrorLogs`: the failed step's last output between rulers."""
    logs = list(step.logs) + ([clean_line(step.partial)] if step.partial.strip() else [])
    if not logs:
        return []
    lines = [Text("------"), _dim(" > ", f"{step.title}:", width, "")]
    lines += [_dim("", line, width, "") for line in logs]
    lines.append(Text("------"))
    return lines


def render_lines(view: BuildView, now: float, width: int, height: int | None, final: bool) -> list[Text]:
    """The whole view: header, steps (with running steps' output), and when final the failure summary.

    Live frames fit in `height` lines; the final frame shows every step (it scrolls into the terminal history).
    """
    width = max(20, width)
    rows = [*view.tasks.values(), *view.pulls.values(), *view.steps.values(), *view.pushes.values()]
    blocks = [(s, _step_block(s, now, width, final)) for s in rows]
    if final or height is None:
        body = [line for _, block in blocks for line in block]
    else:
        body = _fit(blocks, max(0, height - 2))
    lines = [_header(view, now, width), *body]
    if final and view.failed is not None and view.failed in view.steps:
        lines += _failure_summary(view.steps[view.failed], width)
    if final and view.summary is not None:
        lines.append(_dim("", ev.summary_text(view.summary), width, "bold"))
    return lines


class TtyDisplay:
    """Progress sink for a terminal: a rich Live view on `out`, refreshed ~8 times a second.

    Thread-safe; never raises into the caller (after an internal error it falls back to plain lines). The view
    is finished (last frame printed, cursor shown) on BuildDone, once a step failed and none still runs, by
    `close()`, or at
    interpreter exit; events after that are ignored.
    """

    def __init__(self, out: TextIO, *, refresh_per_second: float = REFRESH_PER_SECOND,
                 clock: Callable[[], float] = time.time, force_terminal: bool | None = None) -> None:
        self.out = out
        self.clock = clock
        self.view = BuildView()
        self.lock = threading.Lock()
        # force_terminal=None: rich decides from out.isatty() (off a terminal only the last frame is printed)
        self.console = Console(file=out, highlight=False, emoji=False, markup=False, soft_wrap=False,
                               force_terminal=force_terminal)
        # Writes to sys.stderr (warnings, logging) go above the view when the view itself is on sys.stderr;
        # other streams are left alone: `pybuild build . > out` must not pull stdout onto the terminal.
        self.live = Live(_Frame(self), console=self.console, refresh_per_second=refresh_per_second,
                         transient=False, redirect_stdout=out is sys.stdout, redirect_stderr=out is sys.stderr)
        self.phase = "idle"  # idle → live → finished; guarded by `lock`
        self.final = False
        self.switch = threading.Lock()  # serialises Live start/stop; taken before rich's lock, never inside `lock`
        self.running = False
        self.fallback: Callable[[ev.Event], None] | None = None  # the plain display, once degraded
        atexit.register(self.close)

    def __call__(self, event: ev.Event) -> None:
        try:
            if self.fallback is not None:
                self.fallback(event)
                return
            with self.lock:
                if self.phase == "finished":
                    return
                self.view.apply(event)
                start = self.phase == "idle"
                self.phase = "live"
                finish = self.view.finished
            if start:
                self._start()
            if finish:
                self.close()
        except Exception:  # a display must not break a build: degrade to plain lines
            self._degrade(event)

    def close(self) -> None:
        """Print the last frame and give the terminal back. Idempotent; safe from any thread."""
        with self.lock:
            self.phase = "finished"
            self.final = True
        atexit.unregister(self.close)
        with self.switch:
            if self.running:
                self.running = False
                try:
                    self.live.stop()
                except Exception:
                    pass
        try:
            self.out.flush()
        except Exception:
            pass

    def _start(self) -> None:
        with self.switch:
            with self.lock:
                wanted = self.phase == "live" and not self.running
            if wanted:
                self.live.start(refresh=True)
                self.running = True

    def lines(self, width: int, height: int | None) -> list[Text]:
        """The current frame (the Live's renderable; also handy for tests)."""
        with self.lock:
            return render_lines(self.view, self.clock(), width, height, self.final)

    def _degrade(self, event: ev.Event) -> None:
        from builder.progress.display import PlainDisplay  # lazy: saves ~2 ms at start-up

        try:
            self.close()
        except Exception:
            pass
        with self.lock:
            if self.fallback is None:
                self.fallback = PlainDisplay(self.out)
        try:
            self.fallback(event)
        except Exception:
            pass


class _Frame:
    """The renderable the Live shows; asks the display for lines sized to the console."""

    def __init__(self, display: TtyDisplay) -> None:
        self.display = display

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        try:
            lines = self.display.lines(options.max_width, options.size.height)
        except Exception as exc:  # rendering runs on rich's thread: never let a traceback reach the terminal
            lines = [Text(f"[+] Building (progress view failed: {exc!r})")]
        yield from lines
