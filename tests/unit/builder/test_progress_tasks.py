"""Issue 25: tasks outside the steps (`[internal] load metadata for IMAGE`), a step's bytes and the build's
summary, in the plain and tty views and as JSON."""
from __future__ import annotations

import io
import json
import os

import pytest

from builder.progress import events as ev
from builder.progress.display import PlainDisplay
from builder.progress.tasks import HASH_BATCH, layer_meter, metered_digests, read_context, resolving
from builder.progress.tty import render_lines
from builder.progress.ttyview import BuildView

TITLE = "[internal] load metadata for docker.io/library/alpine:latest"
SUMMARY = ev.BuildSummary(steps=5, ran=2, cached=3, elapsed=1.25, size=12_345_678, ts=103.0)


def view_of(events) -> BuildView:
    view = BuildView()
    for event in events:
        view.apply(event)
    return view


def test_plain_task_lines_bytes_and_summary():
    out = io.StringIO()
    display = PlainDisplay(out)
    for event in [ev.TaskStarted("meta-1", TITLE, ts=100.0), ev.TaskDone("meta-1", 0.5, ts=100.5),
                  ev.StepStarted(2, "[stage-0 2/2] RUN make", ts=100.5),
                  ev.TaskProgress("2", "writing layer", 1_000_000, ts=101.0),
                  ev.TaskProgress("2", "writing layer", 2_000_000, ts=101.5),  # within a second: not shown
                  ev.TaskProgress("2", "writing layer", 3_000_000, ts=102.0),
                  ev.StepDone(2, 1.5, ts=102.0), SUMMARY]:
        display(event)
    display.close()
    assert out.getvalue() == (
        f"#meta-1 {TITLE}\n#meta-1 DONE 0.5s\n#2 [stage-0 2/2] RUN make\n#2 writing layer 1MB\n"
        "#2 writing layer 3MB\n#2 DONE 1.5s\n"
        "#summary 2 steps run, 3 cached (5 in all) in 1.2s; image 12.35MB (compressed layers)\n")


def test_plain_failed_task_says_why():
    out = io.StringIO()
    display = PlainDisplay(out)
    display(ev.TaskStarted("meta-3", TITLE, ts=100.0))
    display(ev.TaskDone("meta-3", 2.0, "connection refused", ts=102.0))
    display.close()
    assert out.getvalue().splitlines()[-1] == "#meta-3 ERROR: connection refused"


def test_tty_task_row_runs_with_a_timer_and_a_steps_bytes_line():
    events = [ev.TaskStarted("meta-1", TITLE, ts=100.0), ev.StepStarted(1, "[1/1] RUN make", ts=100.0),
              ev.TaskProgress("1", "writing layer", 4_000_000, 0, ts=101.0)]
    lines = [line.plain for line in render_lines(view_of(events), now=101.5, width=80, height=24, final=False)]
    assert lines[1].startswith(" => ") and TITLE in lines[1] and lines[1].endswith(" 1.5s")
    assert lines[2].endswith("[1/1] RUN make" + " " * (80 - 4 - 9 - 14 - 4) + "1.5s")
    assert lines[3] == " => => writing layer 4MB"


def test_tty_final_frame_ends_with_the_summary_and_the_task_done():
    events = [ev.TaskStarted("meta-1", TITLE, ts=100.0), ev.TaskDone("meta-1", 0.75, ts=100.75),
              ev.StepStarted(1, "[1/1] RUN make", ts=101.0), ev.StepDone(1, 1.0, ts=102.0), SUMMARY,
              ev.BuildDone("sha256:1", "sha256:2", 3.0, ts=103.0)]
    lines = [line.plain for line in render_lines(view_of(events), now=104.0, width=80, height=24, final=True)]
    assert lines[1].startswith(" => DONE     " + TITLE) and lines[1].endswith(" 0.8s")
    assert lines[-1] == "2 steps run, 3 cached (5 in all) in 1.2s; image 12.35MB (compressed layers)"


def test_resolving_reports_start_and_failure_as_json():
    seen: list = []

    class Refused(Exception):
        message = "connection refused\nmore"

    try:
        with resolving(seen.append, "127.0.0.1:5000/x:latest"):
            raise Refused()
    except Refused:
        pass
    docs = [json.loads(ev.to_json(e)) for e in seen]
    assert [d["type"] for d in docs] == ["TaskStarted", "TaskDone"]
    assert docs[0]["title"] == "[internal] load metadata for 127.0.0.1:5000/x:latest"
    assert docs[1]["task"] == docs[0]["task"] and docs[1]["error"] == "connection refused"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_layer_meter_is_silent_for_a_second_then_reports_twice_a_second():
    seen: list = []
    clock = Clock()
    meter = layer_meter(seen.append, 4, clock)
    for step in range(12):  # a write every 0.25 s for 3 s
        meter((step + 1) << 20, (step + 1) << 19)
        clock.now += 0.25
    assert [(e.task, e.current, e.written) for e in seen] == [("4", n << 20, n << 19) for n in (5, 7, 9, 11)]
    assert ev.progress_text(seen[0]) == "writing layer 5.243MB tarred, 2.621MB compressed"


def test_metered_digests_hashes_large_sources_in_batches_and_keeps_the_order():
    seen: list = []
    clock = Clock()
    calls: list = []

    def digests(items):
        calls.append(len(items))
        clock.now += 0.75
        return [f"d{path}" for path, _ in items]

    big = os.stat_result((0o100644, 0, 0, 1, 0, 0, HASH_BATCH // 2, 0, 0, 0))
    items = [(str(n), big) for n in range(5)]
    assert metered_digests(digests, seen.append, 2, clock)(items) == [f"d{n}" for n in range(5)]
    assert calls == [2, 2, 1]
    assert [(e.current, e.total) for e in seen] == [(2 * HASH_BATCH, 5 * HASH_BATCH // 2),
                                                    (5 * HASH_BATCH // 2, 5 * HASH_BATCH // 2)]
    small = [(str(n), os.stat_result((0o100644, 0, 0, 1, 0, 0, 10, 0, 0, 0))) for n in range(3)]
    calls.clear()
    metered_digests(digests, seen.append, 2, clock)(small)
    assert calls == [3]  # a small context: one bulk call, as before


class SlowStream:
    """1 MiB a read, each taking 0.3 s of the fake clock."""

    def __init__(self, clock: Clock, reads: int) -> None:
        self.clock, self.left = clock, reads

    def read(self, n: int) -> bytes:
        if not self.left:
            return b""
        self.left -= 1
        self.clock.now += 0.3
        return b"x" * min(n, 1 << 20)


def test_a_slow_stdin_context_becomes_a_task_with_its_bytes():
    seen: list = []
    clock = Clock()
    data = read_context(SlowStream(clock, 8), seen.append, clock)
    assert len(data) == 8 << 20
    assert [type(e).__name__ for e in seen] == ["TaskStarted", "TaskProgress", "TaskProgress", "TaskProgress",
                                                "TaskDone"]
    assert seen[0].title == "[internal] load build context"
    assert [e.current >> 20 for e in seen[1:4]] == [4, 6, 8] and seen[-1].elapsed == pytest.approx(2.4)


def test_a_quick_stdin_context_says_nothing():
    seen: list = []
    clock = Clock()
    assert read_context(SlowStream(clock, 3), seen.append, clock) == b"x" * (3 << 20) and seen == []


def test_a_summary_of_an_image_with_uncompressed_layers_says_so():
    from types import SimpleNamespace

    from builder.progress.tasks import summary

    def layer(media_type: str, size: int) -> SimpleNamespace:
        return SimpleNamespace(blob=SimpleNamespace(media_type=media_type, size=size))

    gzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    eager = summary({}, SimpleNamespace(layers=[layer(gzip, 1000)]), 1.0)
    lazy = summary({}, SimpleNamespace(layers=[layer(gzip, 1000), layer("application/vnd.oci.image.layer.v1.tar", 5000)]),
                   1.0)
    assert ev.summary_text(eager).endswith("image 1kB (compressed layers)")
    assert ev.summary_text(lazy).endswith("image 6kB (uncompressed layers)")


def test_plain_shows_a_dockerfiles_control_characters_as_question_marks():
    out = io.StringIO()
    display = PlainDisplay(out)
    display(ev.StepStarted(1, "[stage-0 1/1] RUN --mount=type=cache,id=a\x1b[2J\x07 true", total=1))
    display(ev.StepFailed(1, 0.1, "cache mount a\x1b]0;owned\x07 failed"))
    display.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text, repr(text)
    assert "id=a?[2J? true" in text and "a?]0;owned? failed" in text
