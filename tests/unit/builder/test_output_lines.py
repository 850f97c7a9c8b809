"""A RUN's output is cut into lines per stream (builder.ops.exec.Lines) and plain progress keeps each stream's
unfinished line apart (issue 25)."""
from __future__ import annotations

import io

from builder.ops.exec import LONGEST_LINE, Lines
from builder.progress import events as ev
from builder.progress.display import PlainDisplay


def test_lines_waits_for_the_end_of_a_line_and_of_a_utf8_character():
    got: list[str] = []
    lines = Lines(got.append)
    for chunk in (b"ab", b"cd\nef", b"gh\ncaf\xc3", b"\xa9\n", b"no newline"):
        lines.feed(chunk)
    assert got == ["abcd\n", "efgh\n", "café\n"]
    lines.close()
    assert got[-1] == "no newline"


def test_lines_passes_on_an_endless_unfinished_line():
    got: list[str] = []
    lines = Lines(got.append)
    lines.feed(b"x" * (LONGEST_LINE + 1))
    assert got == ["x" * (LONGEST_LINE + 1)]


def test_plain_keeps_each_streams_unfinished_line_apart():
    out = io.StringIO()
    display = PlainDisplay(out)
    display(ev.StepStarted(1, "[1/1] RUN x", ts=0.0))
    display(ev.StepLog(1, "stdout", "out-part", ts=0.1))
    display(ev.StepLog(1, "stderr", "err line\n", ts=0.2))
    display(ev.StepLog(1, "stdout", " end\n", ts=0.3))
    assert out.getvalue().splitlines()[1:] == ["#1 0.200 err line", "#1 0.100 out-part end"]
