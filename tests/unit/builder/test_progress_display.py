"""Progress renderers fed scripted event streams: plain (exact text), rawjson (one JSON object a line), and the
tty view rendered by a child process under a real pseudo-terminal."""
from __future__ import annotations

import io
import json
import os
import re
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.progress import events as ev
from builder.progress.display import PlainDisplay, QuietDisplay, RawJsonDisplay, make_display
from builder.progress.tty import TtyDisplay

REPO = Path(__file__).resolve().parents[3]
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")

# One build: a cached base, a RUN with output (split across chunks), a COPY, and the end of the build.
SUCCESS = [
    ev.StepStarted(1, "[1/3] FROM busybox", ts=100.0),
    ev.StepCached(1, ts=100.0),
    ev.StepStarted(2, "[2/3] RUN make", ts=100.5),
    ev.StepExplain(2, "cache miss: key sha256:0123456789ab", ts=100.5),
    ev.StepLog(2, "stdout", "cc -c main.c\n", ts=100.75),
    ev.StepLog(2, "stdout", "cc -o app main.o\n", ts=101.0),
    ev.StepDone(2, 0.625, ts=101.125),
    ev.StepStarted(3, "[3/3] COPY app /usr/bin/app", ts=101.125),
    ev.StepDone(3, 0.25, ts=101.375),
    ev.BuildDone("sha256:" + "a" * 64, "sha256:" + "b" * 64, 1.5, ts=101.5),
]
# A build whose second step fails after printing to stderr.
FAILURE = [
    ev.StepStarted(1, "[1/2] FROM busybox", ts=200.0),
    ev.StepCached(1, ts=200.0),
    ev.StepStarted(2, "[2/2] RUN false", ts=200.0),
    ev.StepLog(2, "stderr", "boom: it broke\n", ts=200.125),
    ev.StepFailed(2, 0.25, 'process "/bin/sh -c false" did not complete successfully: exit code: 1', ts=200.25),
]
# Two stages: one fails, the other's running step is cancelled because of it.
CANCELLED = [
    ev.StepStarted(1, "[slow 1/1] RUN sleep 30", ts=300.0),
    ev.StepStarted(2, "[broken 1/1] RUN exit 7", ts=300.0),
    ev.StepFailed(2, 0.5, 'process "/bin/sh -c exit 7" did not complete successfully: exit code: 7', ts=300.5),
    ev.StepCancelled(1, 0.625, ts=300.625),
]
PLAIN = {
    "success": (SUCCESS, """\
#1 [1/3] FROM busybox
#1 CACHED
#2 [2/3] RUN make
#2 cache miss: key sha256:0123456789ab
#2 0.250 cc -c main.c
#2 0.500 cc -o app main.o
#2 DONE 0.6s
#3 [3/3] COPY app /usr/bin/app
#3 DONE 0.2s
#done image sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \
manifest sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb in 1.5s
"""),
    "failure": (FAILURE, """\
#1 [1/2] FROM busybox
#1 CACHED
#2 [2/2] RUN false
#2 0.125 boom: it broke
#2 ERROR: process "/bin/sh -c false" did not complete successfully: exit code: 1
"""),
    "cancelled": (CANCELLED, """\
#1 [slow 1/1] RUN sleep 30
#2 [broken 1/1] RUN exit 7
#2 ERROR: process "/bin/sh -c exit 7" did not complete successfully: exit code: 7
#1 CANCELED
"""),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_display_prints_stable_text(name):
    events, expected = PLAIN[name]
    out = io.StringIO()
    display = PlainDisplay(out)
    for event in events:
        display(event)
    display.close()
    assert out.getvalue() == expected


def test_plain_display_shows_pulled_layers_once_a_second_and_when_done():
    out = io.StringIO()
    display = PlainDisplay(out)
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    for event in [ev.TransferProgress("pull", "reg:5000/me/app:1", a, 0, 31_457_280, ts=10.0),
                  ev.TransferProgress("pull", "reg:5000/me/app:1", b, 0, 3400, ts=10.0),
                  ev.TransferProgress("pull", "reg:5000/me/app:1", a, 4_000_000, 31_457_280, ts=10.5),  # within a second
                  ev.TransferProgress("pull", "reg:5000/me/app:1", b, 3400, 3400, ts=10.5),
                  ev.TransferProgress("pull", "reg:5000/me/app:1", a, 12_582_912, 31_457_280, ts=11.25),
                  ev.TransferProgress("pull", "reg:5000/me/app:1", a, 31_457_280, 31_457_280, ts=11.5)]:
        display(event)
    assert out.getvalue() == """\
#pull reg:5000/me/app:1 sha256:aaaaaaaaaaaa 0B / 31.46MB
#pull reg:5000/me/app:1 sha256:bbbbbbbbbbbb 0B / 3.4kB
#pull reg:5000/me/app:1 sha256:bbbbbbbbbbbb 3.4kB / 3.4kB 0.5s done
#pull reg:5000/me/app:1 sha256:aaaaaaaaaaaa 12.58MB / 31.46MB 1.2s
#pull reg:5000/me/app:1 sha256:aaaaaaaaaaaa 31.46MB / 31.46MB 1.5s done
"""


@pytest.mark.parametrize("size, text", [(0, "0B"), (999, "999B"), (1000, "1kB"), (3400, "3.4kB"),
                                        (31_457_280, "31.46MB"), (2_500_000_000, "2.5GB")])
def test_human_size_is_buildkits(size, text):
    assert ev.human_size(size) == text


def test_plain_display_joins_a_line_split_across_chunks():
    out = io.StringIO()
    display = PlainDisplay(out)
    for event in [ev.StepStarted(1, "[1/1] RUN make", ts=1.0), ev.StepLog(1, "stdout", "cc -o ", ts=1.5),
                  ev.StepLog(1, "stdout", "app\n", ts=1.75)]:
        display(event)
    assert out.getvalue() == "#1 [1/1] RUN make\n#1 0.500 cc -o app\n"


@pytest.mark.parametrize("events", [SUCCESS, FAILURE, CANCELLED], ids=["success", "failure", "cancelled"])
def test_rawjson_display_writes_one_typed_object_per_line(events):
    out = io.StringIO()
    display = RawJsonDisplay(out)
    for event in events:
        display(event)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events)
    for line, event in zip(lines, events):
        obj = json.loads(line)
        assert obj["type"] == type(event).__name__
        assert obj["ts"] == event.ts


@pytest.mark.parametrize("mode, kind", [("plain", PlainDisplay), ("quiet", QuietDisplay),
                                        ("rawjson", RawJsonDisplay), ("tty", TtyDisplay),
                                        ("auto", PlainDisplay)])
def test_make_display_returns_closable_sinks(mode, kind):
    display = make_display(mode, io.StringIO())  # a StringIO is no terminal: auto means plain
    assert type(display) is kind
    display.close()
    display.close()  # idempotent


def test_tty_display_off_a_terminal_prints_the_final_frame_once():
    out = io.StringIO()
    display = TtyDisplay(out)
    for event in SUCCESS:
        display(event)
    display.close()
    text = out.getvalue()
    assert "\x1b" not in text  # not a terminal: no cursor movement, no colour
    assert text.count("[+] Building") == 1
    assert "[+] Building 1.5s (3/3) FINISHED" in text
    for title in ("[1/3] FROM busybox", "[2/3] RUN make", "[3/3] COPY app /usr/bin/app"):
        assert title in text
    assert re.search(r"=> CACHED +\[1/3\] FROM busybox +0\.0s", text)
    assert re.search(r"=> DONE +\[2/3\] RUN make +0\.6s", text)


def test_tty_display_off_a_terminal_shows_a_cancelled_step_as_canceled():
    out = io.StringIO()
    display = TtyDisplay(out)
    for event in CANCELLED:
        display(event)
    display.close()
    text = out.getvalue()
    assert re.search(r"=> CANCELED +\[slow 1/1\] RUN sleep 30 +0\.6s", text), text
    assert re.search(r"=> ERROR +\[broken 1/1\] RUN exit 7 +0\.5s", text), text


def test_tty_display_never_raises_into_the_solver():
    out = io.StringIO()
    out.close()  # every write now raises ValueError
    display = TtyDisplay(out, force_terminal=True)  # a terminal Live writes on start
    for event in SUCCESS + FAILURE:
        display(event)
    display.close()
    assert isinstance(display.fallback, PlainDisplay)  # it gave up on the live view, and kept quiet


def test_tty_display_survives_a_terminal_that_went_away():
    master, slave = os.openpty()
    os.close(master)  # writes to the slave now fail with EIO, as after the terminal window closed
    out = open(slave, "w", encoding="utf-8")
    display = TtyDisplay(out, force_terminal=True)
    for event in SUCCESS:
        display(event)
    display.close()
    assert isinstance(display.fallback, PlainDisplay)
    try:
        out.close()
    except OSError:  # the file's own close flushes what the plain fallback left buffered: EIO again
        pass


# --- under a real pseudo-terminal ---------------------------------------------------------------------------

CHILD = r"""
import json, sys, threading, time
from builder.progress import events as ev
from builder.progress.tty import TtyDisplay

spec = json.loads(sys.argv[1])
events = []
for obj in spec["events"]:
    kind = obj.pop("type")
    events.append(getattr(ev, kind)(**obj))
stream = getattr(sys, spec["stream"])
display = TtyDisplay(stream, refresh_per_second=spec["rate"])

def feed(items):
    for event in items:
        if event is events[-1]:
            time.sleep(spec["hold"])
        display(event)
        if spec["say"] and event is events[spec["say"][0]]:
            print(spec["say"][1], file=getattr(sys, spec["stream"]))  # looked up now, as `warnings` does
        time.sleep(spec["delay"])

if spec["threads"] > 1:  # each step's events on its own thread, the build's end after all of them
    by_step = {}
    for event in events:
        by_step.setdefault(getattr(event, "number", None), []).append(event)
    ends = by_step.pop(None, [])
    workers = [threading.Thread(target=feed, args=(items,)) for items in by_step.values()]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    feed(ends)
else:
    feed(events)
if spec["close"]:
    display.close()
"""


def run_in_pty(events, *, delay=0.0, hold=0.0, close=True, threads=1, rows=24, cols=100, rate=8.0,
               stream="stdout", say=None):
    """Run CHILD with its stdout and stderr on a pty of rows x cols; return (exit code, raw output).

    The child feeds `events` to a TtyDisplay on sys.<stream>, sleeping `delay` after each and `hold` before the
    last; say=(index, text) prints text to the same stream after events[index]."""
    import fcntl
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    spec = {"events": [json.loads(ev.to_json(e)) for e in events], "delay": delay, "close": close,
            "threads": threads, "rate": rate, "hold": hold,
            "stream": stream, "say": say}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm-256color", "PYTHONPATH": str(REPO),
           "LANG": "C.UTF-8"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, cwd=REPO, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal's last slave descriptor
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def screen_text(raw: str) -> str:
    return ANSI.sub("", raw).replace("\r", "")


def last_frame(raw: str) -> str:
    text = screen_text(raw)
    return text[text.rindex("[+] Building"):]


def test_tty_display_under_a_pty_shows_live_frames_and_a_final_summary():
    code, raw = run_in_pty(SUCCESS, delay=0.02, rate=20.0)
    assert code == 0, raw
    assert "Traceback" not in raw
    assert "\x1b[?25l" in raw and raw.rstrip().endswith("\x1b[?25h")  # cursor hidden while live, shown at the end
    text = screen_text(raw)
    assert text.count("[+] Building") >= 2  # redrawn while the steps ran
    final = last_frame(raw)
    assert "(3/3) FINISHED" in final
    assert re.search(r"=> CACHED +\[1/3\] FROM busybox +0\.0s", final)
    assert re.search(r"=> DONE +\[2/3\] RUN make +0\.6s", final)
    assert re.search(r"=> DONE +\[3/3\] COPY app /usr/bin/app +0\.2s", final)
    assert "=> => cache miss: key sha256:0123456789ab" in final
    assert "# cc -o app main.o" not in final  # output is shown only while a step runs


def test_tty_display_under_a_pty_shows_running_output_dimmed():
    started = time.time()
    events = [ev.StepStarted(1, "[1/1] RUN make", ts=started)]
    events += [ev.StepLog(1, "stdout", f"compiling unit {i}\n", ts=started) for i in range(10)]
    events += [ev.StepDone(1, 0.5, ts=started + 0.5)]
    code, raw = run_in_pty(events, delay=0.01, hold=0.2, rate=20.0)
    assert code == 0, raw
    assert "\x1b[2m => => # compiling unit 9" in raw  # dim (SGR 2), under the running step
    frames = [f for f in screen_text(raw).split("[+] Building") if "compiling unit" in f]
    assert all(f.count("=> => #") <= 6 for f in frames)  # only the last 6 lines
    assert re.findall(r"compiling unit (\d)", frames[-1]) == ["4", "5", "6", "7", "8", "9"]


def test_tty_display_under_a_pty_summarises_a_failed_step():
    code, raw = run_in_pty(FAILURE, delay=0.02)
    assert code == 0, raw
    assert "Traceback" not in raw
    final = last_frame(raw)
    assert re.search(r"=> ERROR +\[2/2\] RUN false +0\.2s", final)
    assert "=> => ! process \"/bin/sh -c false\" did not complete successfully: exit code: 1" in final
    assert "------\n > [2/2] RUN false:\nboom: it broke\n------" in final
    assert raw.rstrip().endswith("\x1b[?25h")


def test_tty_display_restores_the_terminal_at_exit_without_close():
    started = time.time()
    events = [ev.StepStarted(1, "[1/2] FROM busybox", ts=started), ev.StepCached(1, ts=started),
              ev.StepStarted(2, "[2/2] RUN sleep 1", ts=started)]
    code, raw = run_in_pty(events, delay=0.05, close=False)
    assert code == 0, raw
    assert "Traceback" not in raw
    assert raw.rstrip().endswith("\x1b[?25h")
    assert re.search(r"=> … +\[2/2\] RUN sleep 1", last_frame(raw))  # still running when the process ended


def test_tty_display_under_a_pty_keeps_every_step_in_the_final_frame_of_a_short_terminal():
    started = time.time()
    events = []
    for n in range(1, 31):
        events += [ev.StepStarted(n, f"[{n}/30] RUN step-{n}", ts=started), ev.StepDone(n, 0.1, ts=started)]
    events.append(ev.BuildDone("sha256:" + "c" * 64, "sha256:" + "d" * 64, 0.5, ts=started))
    code, raw = run_in_pty(events, rows=10, cols=80, rate=50.0, delay=0.002)
    assert code == 0, raw
    final = last_frame(raw)
    assert "(30/30) FINISHED" in final
    for n in range(1, 31):
        assert f"[{n}/30] RUN step-{n} " in final


def test_tty_display_under_a_pty_takes_events_from_many_threads():
    started = time.time()
    events = []
    for n in range(1, 9):
        events.append(ev.StepStarted(n, f"[{n}/8] RUN job-{n}", ts=started))
        events += [ev.StepLog(n, "stdout", f"job {n} line {i}\n", ts=started) for i in range(40)]
        events.append(ev.StepDone(n, 0.3, ts=started + 0.3))
    events.append(ev.BuildDone("sha256:" + "e" * 64, "sha256:" + "f" * 64, 0.4, ts=started + 0.4))
    code, raw = run_in_pty(events, threads=8, delay=0.001, rate=50.0)
    assert code == 0, raw
    assert "Traceback" not in raw
    final = last_frame(raw)
    assert "(8/8) FINISHED" in final
    for n in range(1, 9):
        assert re.search(rf"=> DONE +\[{n}/8\] RUN job-{n} +0\.3s", final)


def test_tty_display_on_stderr_prints_other_stderr_writes_above_the_view():
    started = time.time()
    events = [ev.StepStarted(1, "[1/2] RUN make", ts=started), ev.StepLog(1, "stdout", "compiling\n", ts=started),
              ev.StepDone(1, 0.1, ts=started), ev.StepStarted(2, "[2/2] RUN test", ts=started),
              ev.StepDone(2, 0.1, ts=started)]
    code, raw = run_in_pty(events, delay=0.05, stream="stderr", say=(1, "warning: something odd"))
    assert code == 0, raw
    # the view is erased, the line printed on its own, and the view redrawn below it
    assert re.search(r"\x1b\[2Kwarning: something odd\r\n(\x1b\[[0-9;]*m)?\[\+\] Building", raw), raw
    assert re.search(r"=> DONE +\[2/2\] RUN test", last_frame(raw))
