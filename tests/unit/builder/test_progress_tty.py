"""The tty view's pure parts: folding events into a BuildView and laying frames out (no terminal needed)."""
from __future__ import annotations

import pytest
from rich.cells import cell_len

from builder.progress import events as ev
from builder.progress.tty import render_lines
from builder.progress.ttyview import LIVE_LOG_LINES, BuildView, clean_line


def view_of(events) -> BuildView:
    view = BuildView()
    for event in events:
        view.apply(event)
    return view


def plain(lines) -> list[str]:
    return [line.plain for line in lines]


RUNNING_BUILD = [
    ev.StepStarted(1, "[1/3] FROM busybox", ts=100.0),
    ev.StepCached(1, ts=100.0),
    ev.StepStarted(2, "[2/3] RUN make", ts=100.5),
    ev.StepExplain(2, "cache miss: key sha256:0123", ts=100.5),
    ev.StepLog(2, "stdout", "cc -c main.c\ncc -o ", ts=101.0),
    ev.StepLog(2, "stderr", "app main.o\nlinking", ts=101.25),
    ev.StepStarted(3, "[3/3] COPY app /app", ts=100.5),
    ev.StepDone(3, 0.25, ts=100.75),
]


def test_live_frame_layout():
    lines = render_lines(view_of(RUNNING_BUILD), now=102.0, width=50, height=24, final=False)
    spinner = plain(lines)[2][4]
    assert plain(lines) == [
        "[+] Building 2.0s (2/3)",
        " => CACHED   [1/3] FROM busybox               0.0s",
        f" => {spinner}        [2/3] RUN make                   1.5s",
        " => => # cc -c main.c",
        " => => # cc -o app main.o",  # a line split across two chunks is joined
        " => => # linking",  # the unterminated last line is shown while the step runs
        " => => cache miss: key sha256:0123",
        " => DONE     [3/3] COPY app /app              0.2s",
    ]
    assert spinner in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    assert [line.style for line in lines[3:6]] == ["dim"] * 3


def test_pulled_layers_have_a_row_each_above_the_steps():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    events = [ev.TransferProgress("pull", "reg/me/app:1", a, 0, 31_457_280, ts=100.0),
              ev.TransferProgress("pull", "reg/me/app:1", b, 0, 3400, ts=100.0),
              ev.TransferProgress("pull", "reg/me/app:1", b, 3400, 3400, ts=100.25),
              ev.TransferProgress("pull", "reg/me/app:1", a, 12_582_912, 31_457_280, ts=101.0)]
    lines = plain(render_lines(view_of(events), now=101.5, width=74, height=24, final=False))
    spinner = lines[1][4]
    assert lines == [
        "[+] Building 1.5s (0/0)",
        f" => {spinner}        pull reg/me/app:1 sha256:aaaaaaaaaaaa 12.58MB / 31.46MB  1.5s",
        " => DONE     pull reg/me/app:1 sha256:bbbbbbbbbbbb 3.4kB / 3.4kB      0.2s",
    ]
    assert spinner in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏" and {cell_len(line) for line in lines[1:]} == {74}
    view = view_of(events + [ev.StepStarted(1, "[1/1] FROM reg/me/app:1", ts=101.75)])
    short = plain(render_lines(view, now=102.0, width=72, height=4, final=False))
    assert [line[13:43].rstrip() for line in short[1:]] == ["pull reg/me/app:1 sha256:aaaaa", "[1/1] FROM reg/me/app:1"]


def test_the_header_counts_every_planned_step_and_canceled_fits_its_column():
    events = [ev.StepStarted(1, "[1/3] FROM busybox", ts=0.0, total=3), ev.StepCached(1, ts=0.0),
              ev.StepStarted(2, "[2/3] RUN sleep 9", ts=0.0, total=3), ev.StepCancelled(2, 0.5, ts=0.5)]
    lines = plain(render_lines(view_of(events), now=1.0, width=40, height=None, final=True))
    assert lines[0].startswith("[+] Building 1.0s (2/3)")
    assert lines[1].startswith(" => CACHED   [1/3]") and lines[2].startswith(" => CANCELED [2/3]")


def test_final_frame_after_build_done():
    events = RUNNING_BUILD + [ev.StepDone(2, 1.25, ts=101.75),
                              ev.BuildDone("sha256:aa", "sha256:bb", 1.875, ts=101.875)]
    view = view_of(events)
    assert view.finished
    assert plain(render_lines(view, now=500.0, width=50, height=5, final=True)) == [
        "[+] Building 1.9s (3/3) FINISHED",
        " => CACHED   [1/3] FROM busybox               0.0s",
        " => DONE     [2/3] RUN make                   1.2s",
        " => => cache miss: key sha256:0123",
        " => DONE     [3/3] COPY app /app              0.2s",
    ]


def test_final_frame_after_a_failure_has_the_step_output_between_rulers():
    events = RUNNING_BUILD + [ev.StepFailed(2, 1.5, "process \"make\" did not complete successfully: exit code: 2\n"
                                                   "more detail", ts=102.0)]
    view = view_of(events)
    assert view.failed == 2 and view.finished
    assert plain(render_lines(view, now=500.0, width=50, height=None, final=True)) == [
        "[+] Building 2.0s (3/3)",  # the clock stops at the failure
        " => CACHED   [1/3] FROM busybox               0.0s",
        " => ERROR    [2/3] RUN make                   1.5s",
        " => => ! process \"make\" did not complete successf…",
        " => => cache miss: key sha256:0123",
        " => DONE     [3/3] COPY app /app              0.2s",
        "------",
        " > [2/3] RUN make:",
        "cc -c main.c",
        "cc -o app main.o",
        "linking",
        "------",
    ]


def test_only_the_last_lines_of_a_running_step_are_shown():
    events = [ev.StepStarted(1, "[1/1] RUN seq 40", ts=0.0)]
    events += [ev.StepLog(1, "stdout", f"{i}\n", ts=0.0) for i in range(40)]
    lines = plain(render_lines(view_of(events), now=1.0, width=40, height=None, final=False))
    assert lines[2:] == [f" => => # {i}" for i in range(40 - LIVE_LOG_LINES, 40)]
    final = plain(render_lines(view_of(events), now=1.0, width=40, height=None, final=True))
    assert final[1].startswith(" => …        [1/1] RUN seq 40") and len(final) == 2


@pytest.mark.parametrize("width", [20, 33, 80, 200])
def test_every_line_fits_the_width(width):
    events = RUNNING_BUILD + [ev.StepStarted(4, "[4/4] RUN " + "x" * 300, ts=100.0),
                              ev.StepStarted(5, "[5/5] RUN echo 漢字漢字漢字漢字漢字漢字漢字漢字漢字漢字漢字漢字", ts=100.0),
                              ev.StepLog(5, "stdout", "漢" * 150 + "\n", ts=100.0)]
    lines = render_lines(view_of(events), now=101.0, width=width, height=None, final=False)
    assert all(cell_len(line.plain) <= width for line in lines)
    rows = [line.plain for line in lines if line.plain.startswith(" => ") and not line.plain.startswith(" => => ")]
    assert all(cell_len(row) == width for row in rows)  # rows are padded so the times line up
    assert all(row.endswith("s") for row in rows)


def test_a_short_terminal_drops_finished_steps_first():
    events = []
    for n in range(1, 11):
        events += [ev.StepStarted(n, f"[{n}/12] RUN done-{n}", ts=0.0), ev.StepDone(n, 0.1, ts=0.1)]
    events += [ev.StepStarted(11, "[11/12] RUN busy-11", ts=0.0), ev.StepLog(11, "stdout", "a\nb\n", ts=0.0),
               ev.StepStarted(12, "[12/12] RUN busy-12", ts=0.0)]
    lines = plain(render_lines(view_of(events), now=1.0, width=60, height=8, final=False))
    assert len(lines) <= 8 - 1  # the header and the body leave the cursor's line free
    assert lines[0] == "[+] Building 1.0s (10/12)"
    assert [line.split("] RUN ")[1].split()[0] for line in lines if "] RUN " in line] == [
        "done-9", "done-10", "busy-11", "busy-12"]
    assert " => => # b" in lines


def test_running_steps_alone_overflowing_keep_only_their_rows():
    events = []
    for n in range(1, 9):
        events += [ev.StepStarted(n, f"[{n}/8] RUN busy-{n}", ts=0.0), ev.StepLog(n, "stdout", "out\n", ts=0.0)]
    lines = plain(render_lines(view_of(events), now=1.0, width=60, height=6, final=False))
    assert len(lines) == 5
    assert all("RUN busy-" in line for line in lines[1:])
    assert "busy-8" in lines[-1]


def test_events_for_a_step_never_started_are_shown_under_its_number():
    view = view_of([ev.StepCached(7, ts=3.0)])
    assert plain(render_lines(view, now=3.0, width=30, height=None, final=False)) == [
        "[+] Building 0.0s (1/1)",
        " => CACHED   #7           0.0s",
    ]


@pytest.mark.parametrize("raw, shown", [
    ("plain text", "plain text"),
    ("\x1b[31mred\x1b[0m and \x1b[1;32mgreen\x1b[m", "red and green"),
    ("10%\r50%\r100%", "100%"),
    ("100%\r", "100%"),
    ("a\tb", "a    b"),
    ("bell\x07 and nul\x00", "bell and nul"),
    ("\x1b]0;window title\x07text", "text"),
    ("\x1b[2K\x1b[1Gprogress", "progress"),
])
def test_clean_line(raw, shown):
    assert clean_line(raw) == shown


def test_a_progress_bar_redrawn_with_carriage_returns_shows_its_latest_state():
    events = [ev.StepStarted(1, "[1/1] RUN fetch", ts=0.0)]
    events += [ev.StepLog(1, "stderr", f"\r{i:3d}% [{'#' * (i // 10):<10}]", ts=0.0) for i in range(0, 101)]
    view = view_of(events)
    assert len(view.steps[1].partial) < 20  # 101 redraws, one line kept
    lines = plain(render_lines(view, now=1.0, width=40, height=None, final=False))
    assert lines[2] == " => => # 100% [##########]"
    view.apply(ev.StepLog(1, "stderr", "\ndone\n", ts=0.5))
    assert view.steps[1].logs == ("100% [##########]", "done")
