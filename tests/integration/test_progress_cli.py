"""Issue 5 acceptance 3: every progress mode through the real CLI.

plain is asserted as a whole transcript (times, digests and the base import's state masked); rawjson line by
line; tty under a real pseudo-terminal; `-q` and `--iidfile` for scripts.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Pybuild, _with_root, busybox_context

pytestmark = pytest.mark.slow

# Two stages so the transcript shows stage labels and a COPY --from; --jobs 1 keeps the line order fixed.
SMALL = """\
FROM pybuild/busybox AS tool
RUN echo tool > /tool
FROM pybuild/busybox
COPY --from=tool /tool /tool
RUN echo hello && echo world >&2
COPY f /f
CMD ["cat", "/f"]
"""
FAILING = "FROM pybuild/busybox\nRUN echo going && \\\n    exit 3\n"


def write_context(tmp_path: Path, dockerfile: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    (tmp_path / "f").write_text(f"{tmp_path.name}\n")  # unique per test: the COPY step is never cached before
    return tmp_path


def mask(log: str, ctx: Path) -> str:
    """Blank what changes between runs: durations, output offsets, digests, the context path, and whether the
    base image was imported now or already (FROM steps are DONE the first time in a store, CACHED after)."""
    log = log.replace(str(ctx), "<ctx>")
    log = re.sub(r"\b\d+\.\d+s\b", "<t>s", log)
    log = re.sub(r"^(#\d+) \d+\.\d{3} ", r"\1 <t> ", log, flags=re.M)
    log = re.sub(r"^(#\d+)( \[[^]]*\] FROM .*\n)\1 (?:CACHED|DONE <t>s)$", r"\1\2\1 <ok>", log, flags=re.M)
    log = re.sub(r"^#summary \d+ steps? run, \d+ cached \((\d+) in all\) in <t>s; image [0-9.]+[kMG]?B ",
                 r"#summary <n> run, <n> cached (\1 in all) in <t>s; image <size> ", log, flags=re.M)
    return re.sub(r"sha256:[0-9a-f]{64}", "<digest>", log)


def pb_argv(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "builder", *_with_root(list(args), root)]


def run_in_pty(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run with stdin/stdout/stderr on a fresh pseudo-terminal; (exit code, everything it drew)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, close_fds=True,
                            start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child side is closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    return proc.wait(timeout=30), out.decode(errors="replace")


def test_plain_transcript_of_a_build_and_of_its_cached_rebuild(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, SMALL)
    first = pybuild("--progress", "plain", "--jobs", "1", "--no-cache", str(ctx))
    assert mask(first.stderr.decode(), ctx) == (
        "#1 [tool 1/2] FROM pybuild/busybox\n#1 <ok>\n"
        "#2 [tool 2/2] RUN /bin/sh -c echo tool > /tool\n#2 DONE <t>s\n"
        "#3 [stage-1 1/4] FROM pybuild/busybox\n#3 <ok>\n"
        "#4 [stage-1 2/4] COPY --from=tool /tool /tool\n#4 DONE <t>s\n"
        "#5 [stage-1 3/4] RUN /bin/sh -c echo hello && echo world >&2\n#5 <t> hello\n#5 <t> world\n#5 DONE <t>s\n"
        "#6 [stage-1 4/4] COPY f /f\n#6 DONE <t>s\n"
        "#summary <n> run, <n> cached (6 in all) in <t>s; image <size> (uncompressed layers)\n"
        "#done image <digest> manifest <digest> in <t>s\n")
    again = pybuild("--progress", "plain", "--jobs", "1", str(ctx))
    assert mask(again.stderr.decode(), ctx) == (
        "#1 [tool 1/2] FROM pybuild/busybox\n#1 <ok>\n"
        "#2 [tool 2/2] RUN /bin/sh -c echo tool > /tool\n#2 CACHED\n"
        "#3 [stage-1 1/4] FROM pybuild/busybox\n#3 <ok>\n"
        "#4 [stage-1 2/4] COPY --from=tool /tool /tool\n#4 CACHED\n"
        "#5 [stage-1 3/4] RUN /bin/sh -c echo hello && echo world >&2\n#5 CACHED\n"
        "#6 [stage-1 4/4] COPY f /f\n#6 CACHED\n"
        "#summary <n> run, <n> cached (6 in all) in <t>s; image <size> (uncompressed layers)\n"
        "#done image <digest> manifest <digest> in <t>s\n")
    assert first.stdout == again.stdout  # same image id and manifest
    ran, cached = re.search(r"^#summary (\d) steps run, (\d) cached \(6", first.stderr.decode(), re.M).groups()
    assert int(ran) >= 4 and int(ran) + int(cached) == 6  # the FROMs: imported now or already
    assert "\n#summary 0 steps run, 6 cached (6 in all) in " in again.stderr.decode()


def test_plain_transcript_of_a_failing_build(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, FAILING)
    proc = pybuild("--progress", "plain", str(ctx), check=False)
    assert proc.returncode == 1
    assert proc.stdout == b""
    command = '"/bin/sh -c echo going &&     exit 3"'
    assert mask(proc.stderr.decode(), ctx) == (
        "#1 [stage-0 1/2] FROM pybuild/busybox\n#1 <ok>\n"
        "#2 [stage-0 2/2] RUN /bin/sh -c echo going &&     exit 3\n#2 <t> going\n"
        f"#2 ERROR: process {command} did not complete successfully: exit code: 3\n"
        f"error: process {command} did not complete successfully: exit code: 3\n"
        "failed step: [stage-0 2/2] RUN /bin/sh -c echo going &&     exit 3\n"
        "    2 | RUN echo going && \\\n"
        "    3 |     exit 3\n"
        "[1 lines of output]\n"
        "going\n"
        "hint: the failing instruction is at <ctx>/Dockerfile:2:1\n")


def test_auto_is_plain_when_stderr_is_not_a_terminal(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, SMALL)
    log = pybuild("--jobs", "1", str(ctx)).stderr.decode()
    assert log.startswith("#1 [tool 1/2] FROM pybuild/busybox\n") and "\x1b[" not in log, log


def test_rawjson_is_one_json_event_per_line(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, SMALL)
    proc = pybuild("--progress", "rawjson", "--no-cache", str(ctx))
    events = [json.loads(line) for line in proc.stderr.decode().splitlines()]
    assert all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in events), events
    assert {e["type"] for e in events} == {"StepStarted", "StepLog", "StepDone", "StepCached", "BuildSummary",
                                           "BuildDone"}
    started = [e["number"] for e in events if e["type"] == "StepStarted"]
    ended = [e["number"] for e in events if e["type"] in ("StepDone", "StepCached", "StepFailed")]
    assert sorted(started) == sorted(ended) == list(range(1, 7))  # each step starts once and ends once
    assert events[-1]["type"] == "BuildDone"
    assert f"image id: {events[-1]['image_id']}\n" in proc.stdout.decode()
    logs = "".join(e["text"] for e in events if e["type"] == "StepLog")
    assert sorted(logs.split()) == ["hello", "tool", "world"] or sorted(logs.split()) == ["hello", "world"]


def test_rawjson_reports_the_failed_step(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, FAILING)
    proc = pybuild("--progress", "rawjson", str(ctx), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    failed = [e for e in events if e["type"] == "StepFailed"]
    assert len(failed) == 1 and failed[0]["number"] == 2 and "exit code: 3" in failed[0]["error"], events
    assert "BuildDone" not in {e["type"] for e in events}
    assert len(events) == len(lines)  # nothing but JSON on the stream (issue 25): the error is its last event
    assert events[-1]["type"] == "BuildError" and events[-1]["message"].startswith("process"), events[-1]


def test_a_store_error_inside_a_step_is_shown_as_that_steps_failure(busybox_image, tmp_path):
    """Not only PybuildError: an OSError from the store must still close the step in the event stream."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr (e2fsprogs) is not installed")
    own = Pybuild(tmp_path / "store")  # a store of its own: its tmp/ is made immutable below
    own("-q", "-t", "pybuild/busybox", str(busybox_context(tmp_path / "busybox")))
    ctx = write_context(tmp_path / "ctx", "FROM pybuild/busybox\nRUN true\n")
    if subprocess.run(["chattr", "+i", str(own.root / "tmp")], capture_output=True).returncode != 0:
        pytest.skip("this filesystem does not support the immutable attribute")
    try:
        proc = own("--progress", "rawjson", str(ctx), check=False)
    finally:
        subprocess.run(["chattr", "-i", str(own.root / "tmp")], check=True)
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == kinds[2] == "StepStarted" and kinds[1] in ("StepDone", "StepCached"), events  # FROM
    assert kinds[3:] == ["StepFailed", "BuildError"] and events[3]["number"] == 2, events
    assert "Operation not permitted" in events[3]["error"] and "Operation not permitted" in events[-1]["message"]


def test_quiet_prints_only_the_image_id_and_iidfile_writes_it(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, SMALL)
    iid = tmp_path / "out" / "iid"
    iid.parent.mkdir()
    quiet = pybuild("-q", "--iidfile", str(iid), "--no-cache", str(ctx))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", quiet.stdout.decode()), quiet.stdout
    assert quiet.stderr == b""
    assert iid.read_text() == quiet.stdout.decode().strip()
    plain = pybuild("--progress", "plain", str(ctx))
    assert f"image id: {iid.read_text()}\n" in plain.stdout.decode()  # the same image, now from the cache
    also_quiet = pybuild("--progress", "quiet", str(ctx))
    assert also_quiet.stdout == quiet.stdout and also_quiet.stderr == b""


def test_quiet_failure_prints_nothing_on_stdout_and_no_iidfile(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, FAILING)
    iid = tmp_path / "iid"
    proc = pybuild("-q", "--iidfile", str(iid), str(ctx), check=False)
    assert proc.returncode == 1 and proc.stdout == b""
    err = proc.stderr.decode()
    assert err.startswith("error: process") and "exit code: 3" in err and "    3 |     exit 3" in err, err
    assert not iid.exists()


def test_tty_renders_under_a_pseudo_terminal(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, SMALL)
    code, out = run_in_pty(pb_argv(pybuild.root, "--progress", "tty", "--no-cache", str(ctx)))
    assert code == 0, out
    assert "Traceback" not in out
    assert "[+] Building" in out and "FINISHED" in out
    for title in ("[tool 2/2] RUN /bin/sh -c echo tool > /tool", "[stage-1 4/4] COPY f /f"):
        assert title in out, out
    assert re.search(r"image id: sha256:[0-9a-f]{64}", out)
    assert out.rfind("\x1b[?25h") > out.rfind("\x1b[?25l") >= 0  # the cursor is given back


def test_auto_is_tty_on_a_terminal_and_a_failure_is_summarised(pybuild, busybox_image, tmp_path):
    ctx = write_context(tmp_path, FAILING)
    code, out = run_in_pty(pb_argv(pybuild.root, str(ctx)))
    assert code == 1, out
    assert "Traceback" not in out
    assert "[+] Building" in out and "ERROR" in out
    assert " > [stage-0 2/2] RUN /bin/sh -c echo going &&     exit 3:" in out, out  # the output summary
    assert "error: process" in out and "exit code: 3" in out
    assert out.rfind("\x1b[?25h") > out.rfind("\x1b[?25l") >= 0
