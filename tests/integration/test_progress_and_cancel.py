"""Issue 5 acceptance 3 and 4: progress modes end to end; a failure or Ctrl-C stops everything cleanly."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, _with_root, mountinfo

pytestmark = pytest.mark.slow

SMALL = "FROM pybuild/busybox\nRUN echo hello && echo world >&2\nCOPY f /f\nCMD [\"cat\", \"/f\"]\n"


def small_context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text(SMALL)
    (tmp_path / "f").write_text(f"{tmp_path.name}\n")
    return tmp_path


def mask(log: str) -> str:
    log = re.sub(r"\d+\.\d+s\b", "<t>s", log)
    log = re.sub(r"^(#\d+) \d+\.\d{3} ", r"\1 <t> ", log, flags=re.M)
    log = re.sub(r"^#1 (CACHED|DONE <t>s)$", "#1 <base imported or cached>", log, flags=re.M)
    return re.sub(r"sha256:[0-9a-f]{64}", "<digest>", log)


def test_plain_progress_is_stable(pybuild, busybox_image, tmp_path):
    ctx = small_context(tmp_path)
    first = mask(pybuild("--progress", "plain", str(ctx)).stderr.decode())
    assert first == (
        "#1 [stage-0 1/3] FROM pybuild/busybox\n#1 <base imported or cached>\n"
        "#2 [stage-0 2/3] RUN /bin/sh -c echo hello && echo world >&2\n#2 <t> hello\n#2 <t> world\n#2 DONE <t>s\n"
        "#3 [stage-0 3/3] COPY f /f\n#3 DONE <t>s\n"
        "#done image <digest> manifest <digest> in <t>s\n"), first
    second = mask(pybuild("--progress", "plain", str(ctx)).stderr.decode())
    assert second == (
        "#1 [stage-0 1/3] FROM pybuild/busybox\n#1 <base imported or cached>\n"
        "#2 [stage-0 2/3] RUN /bin/sh -c echo hello && echo world >&2\n#2 CACHED\n"
        "#3 [stage-0 3/3] COPY f /f\n#3 CACHED\n"
        "#done image <digest> manifest <digest> in <t>s\n")


def test_rawjson_quiet_and_iidfile(pybuild, busybox_image, tmp_path):
    ctx = small_context(tmp_path)
    proc = pybuild("--progress", "rawjson", "--no-cache", str(ctx))
    events = [json.loads(line) for line in proc.stderr.decode().splitlines()]
    assert {e["type"] for e in events} >= {"StepStarted", "StepLog", "StepDone", "StepCached", "BuildDone"}
    iid = tmp_path / "iid"
    quiet = pybuild("-q", "--iidfile", str(iid), str(ctx))
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", quiet.stdout.decode())
    assert quiet.stderr.decode() == ""
    assert iid.read_text() == quiet.stdout.decode().strip()


def test_tty_progress_renders_under_a_pseudo_terminal(pybuild, busybox_image, tmp_path):
    ctx = small_context(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "builder",
                             *_with_root(["--progress", "tty", "--no-cache", str(ctx)], pybuild.root)],
                            stdin=slave, stdout=slave, stderr=slave, cwd=REPO, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.time() + 60
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(timeout=30) == 0, out.decode(errors="replace")
    text = out.decode(errors="replace")
    assert "Traceback" not in text
    assert "RUN /bin/sh -c echo hello" in text and "COPY f /f" in text
    assert "image id: sha256:" in text


def popen(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "builder", *_with_root(list(args), root)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def sandbox_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "sleep 61.37" in cmd or "sleep 31.73" in cmd:  # this module's own, unique sleeps
                found.append(cmd)
    return found


def netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_failure_in_one_stage_cancels_the_other(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox AS slow\nRUN sleep 31.73\n"
        "FROM pybuild/busybox AS broken\nRUN echo about to fail && sleep 0.5 && exit 7\n"
        "FROM pybuild/busybox\nCOPY --from=slow /etc/passwd /a\nCOPY --from=broken /etc/passwd /b\n")
    started = time.monotonic()
    proc = pybuild("--progress", "plain", "--no-cache", "--jobs", "2", str(tmp_path), check=False)
    elapsed = time.monotonic() - started
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert elapsed < 10, f"the other stage was not cancelled: {elapsed:.1f} s"
    assert "exit code: 7" in err and "    4 | RUN echo about to fail" in err
    assert "Traceback" not in err
    assert not sandbox_processes()


def test_sigint_during_a_long_run_exits_130_within_a_second_leaving_nothing(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo started && sleep 61.37\n")
    before_mounts, before_netns = mountinfo(), netns()
    proc = popen(pybuild.root, "--progress", "plain", "--no-cache", str(tmp_path))
    buf = b""
    deadline = time.time() + 60
    while b"started" not in buf and time.time() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            buf += os.read(proc.stderr.fileno(), 4096)
    assert b"started" in buf, buf.decode()
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    elapsed = time.monotonic() - sent
    print(f"SIGINT to exit: {elapsed:.3f} s")
    assert proc.returncode == 130
    assert elapsed <= 1.0, elapsed
    assert mountinfo() == before_mounts
    assert netns() == before_netns
    assert not sandbox_processes()
    tmp = pybuild.root / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.iterdir())
