"""Issue 5 acceptance 4: a failure cancels the other running stages; Ctrl-C stops a build within a second.

Either way nothing may stay behind: no mount (`mountinfo()`), no sandbox init or command process, no network
namespace, nothing in the store's tmp/ (cache/__init__.py: mutable snapshots and imports in progress live there).
Each build sleeps for a length no other test uses, so its processes can be told from those of builds running at
the same time on this machine.
"""
from __future__ import annotations

import fcntl
import os
import pty
import random
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, _with_root, mountinfo

pytestmark = pytest.mark.slow


def unique_sleep(seconds: int) -> str:
    return f"sleep {seconds}.{random.randrange(10**5):05d}"


def netns() -> list[str]:
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"`ip netns list` does not work here: {proc.stderr.strip()}")
    return sorted(proc.stdout.splitlines())


def processes(builder_pid: int, sleep: str) -> list[str]:
    """Command lines of the build's sandbox inits and step helpers' fork server with its children (they name the
    builder's pid) and of its sleeps."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        line = " ".join(argv).strip()
        helper = "builder.sandbox.init" in line or "builder.ops.helpers" in line
        if sleep in line or (helper and argv[-2:-1] == [str(builder_pid)]):
            found.append(f"{entry.name} ({comm}): {line}")
    return found


def store_tmp(root: Path) -> list[str]:
    tmp = root / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


class Watch:
    """The host state a build must leave as it found it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounts, self.netns, self.tmp = mountinfo(root), netns(), store_tmp(root)

    def assert_unchanged(self, builder_pid: int, sleep: str) -> None:
        assert processes(builder_pid, sleep) == []
        assert mountinfo(self.root) == self.mounts
        assert netns() == self.netns
        assert store_tmp(self.root) == self.tmp == []


def start(root: Path, *args: str, **popen) -> subprocess.Popen:
    argv = [sys.executable, "-m", "builder", *_with_root(list(args), root)]
    return subprocess.Popen(argv, cwd=REPO, **popen)


def read_until(fd: int, wanted: list[bytes], timeout: float = 60) -> bytes:
    """Read fd until every wanted string has appeared; returns what was read."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not all(w in buf for w in wanted) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    assert all(w in buf for w in wanted), buf.decode(errors="replace")
    return buf

TTY_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-_]")


def tty_build(root: Path, *args: str, rows: int, cols: int) -> tuple[int, str]:
    """Run `pybuild --progress tty ARGS` on a pty of rows x cols until it exits; its exit code and what the
    terminal got, escapes removed and every \\r (a frame redrawn) read as a new line."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = start(root, "--progress", "tty", *args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                 start_new_session=True)
    os.close(slave)
    raw = b""
    try:
        while True:  # read until the build is gone (EIO/EOF); the guard is generous
            ready, _, _ = select.select([master], [], [], 120)
            assert ready, raw.decode(errors="replace")
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(master)
        proc.wait(timeout=60)
    return proc.returncode, TTY_ESCAPES.sub("", raw.decode()).replace("\r\n", "\n").replace("\r", "\n")



def interrupt(proc: subprocess.Popen, send) -> None:
    """Deliver an interrupt with `send()` and wait for the exit. The steps interrupted here sleep 300 s or never
    end, so an exit within the 60 s guard shows the interrupt stopped them; how fast is bench's business, not a
    wall-clock assert that a loaded 2-core machine can break."""
    send()
    proc.wait(timeout=60)


def test_a_failing_stage_cancels_the_other_running_stage(pybuild, busybox_image, tmp_path):
    sleep = unique_sleep(300)
    (tmp_path / "Dockerfile").write_text(
        f"FROM pybuild/busybox AS slow\nRUN echo slow started && {sleep}\n"
        "FROM pybuild/busybox AS broken\nRUN echo about to fail && sleep 0.5 && \\\n    exit 7\n"
        "FROM pybuild/busybox\nCOPY --from=slow /etc/passwd /a\nCOPY --from=broken /etc/passwd /b\n")
    watch = Watch(pybuild.root)
    proc = start(pybuild.root, "--progress", "plain", "--no-cache", "--jobs", "4", str(tmp_path),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The slow stage sleeps 300 s: a build that ends within the 150 s guard cannot have waited for it.
    out, err = (b.decode() for b in proc.communicate(timeout=150))
    assert proc.returncode == 1, err
    assert re.search(r"^#2 \d+\.\d+ slow started$", err, re.M), err  # the slow stage really was running
    assert "#2 CANCELED\n" in err and "#2 ERROR" not in err, err
    assert "failed step: [broken 2/2] RUN /bin/sh -c echo about to fail && sleep 0.5 &&     exit 7\n" in err
    assert "    4 | RUN echo about to fail && sleep 0.5 && \\\n    5 |     exit 7\n" in err, err
    assert "exit code: 7" in err and "Traceback" not in err and out == ""
    watch.assert_unchanged(proc.pid, sleep)


@pytest.mark.parametrize("jobs", ["1", "4"])
def test_sigint_during_a_long_run_exits_130_before_the_step_ends(pybuild, busybox_image, tmp_path, jobs):
    sleep = unique_sleep(300)
    (tmp_path / "Dockerfile").write_text(f"FROM pybuild/busybox\nRUN echo started && {sleep}\n")
    watch = Watch(pybuild.root)
    proc = start(pybuild.root, "--progress", "plain", "--no-cache", "--jobs", jobs, str(tmp_path),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    read_until(proc.stderr.fileno(), [b"started\n"])
    time.sleep(0.3)  # well inside the sleep
    running = processes(proc.pid, sleep)
    assert any("(pybuild-init)" in p for p in running) and any(sleep in p for p in running), running
    interrupt(proc, lambda: proc.send_signal(signal.SIGINT))
    err = proc.stderr.read().decode()
    assert proc.returncode == 130, err
    assert "error: interrupted" in err and "Traceback" not in err, err
    watch.assert_unchanged(proc.pid, sleep)


def test_sigint_stops_every_running_stage(pybuild, busybox_image, tmp_path):
    sleep = unique_sleep(300)
    (tmp_path / "Dockerfile").write_text(
        f"FROM pybuild/busybox AS one\nRUN echo one started && {sleep}\n"
        f"FROM pybuild/busybox AS two\nRUN echo two started && {sleep}\n"
        "FROM pybuild/busybox\nCOPY --from=one /etc/passwd /a\nCOPY --from=two /etc/passwd /b\n")
    watch = Watch(pybuild.root)
    proc = start(pybuild.root, "--progress", "plain", "--no-cache", "--jobs", "4", str(tmp_path),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    read_until(proc.stderr.fileno(), [b"one started\n", b"two started\n"])
    assert len(processes(proc.pid, sleep)) >= 2  # the check below can see them while they run
    interrupt(proc, lambda: proc.send_signal(signal.SIGINT))
    assert proc.returncode == 130, proc.stderr.read().decode()
    watch.assert_unchanged(proc.pid, sleep)


def _controlling_terminal() -> None:  # runs in the child after setsid (start_new_session)
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_ctrl_c_on_a_terminal_stops_the_tty_build(pybuild, busybox_image, tmp_path):
    """^C typed on the terminal: the whole foreground process group (builder and containers) gets SIGINT."""
    sleep = unique_sleep(300)
    (tmp_path / "Dockerfile").write_text(f"FROM pybuild/busybox\nRUN echo started && {sleep}\n")
    watch = Watch(pybuild.root)
    master, slave = pty.openpty()
    proc = start(pybuild.root, "--no-cache", str(tmp_path), stdin=slave, stdout=slave, stderr=slave,
                 start_new_session=True, preexec_fn=_controlling_terminal)
    os.close(slave)
    try:
        shown = read_until(master, [b"started"])
        time.sleep(0.3)
        interrupt(proc, lambda: os.write(master, b"\x03"))
        try:
            while select.select([master], [], [], 0.2)[0]:
                shown += os.read(master, 65536)
        except OSError:  # EIO once the last writer is gone
            pass
    finally:
        os.close(master)
    text = shown.decode(errors="replace")
    assert proc.returncode == 130, text
    assert "[+] Building" in text and "error: interrupted" in text and "Traceback" not in text, text
    assert text.rfind("\x1b[?25h") > text.rfind("\x1b[?25l") >= 0  # the cursor is given back
    watch.assert_unchanged(proc.pid, sleep)


def test_sigint_during_a_large_copy_exits_130_and_leaves_nothing(pybuild, busybox_image, tmp_path):
    with open(tmp_path / "big", "wb") as f:
        for _ in range(25):
            f.write(os.urandom(8 << 20))  # 200 MiB that gzip cannot shrink: several seconds of COPY
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nCOPY big /big\n")
    watch = Watch(pybuild.root)
    proc = start(pybuild.root, "--progress", "plain", "--no-cache", str(tmp_path),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    read_until(proc.stderr.fileno(), [b"] COPY big /big\n"])
    time.sleep(0.3)
    interrupt(proc, lambda: proc.send_signal(signal.SIGINT))
    watch.assert_unchanged(proc.pid, "no sleep in this build")
    assert proc.returncode == 130


def test_sigint_stops_an_endless_add_download(pybuild, busybox_image, tmp_path):
    """ADD <url> downloads before the step's key is known: Ctrl-C stops that download too, and its file goes."""
    import tempfile

    from tests.httpserve import Handler, serving

    class Endless(Handler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"x" * 65536)
                    time.sleep(0.01)
            except OSError:
                pass

    before = set(Path(tempfile.gettempdir()).glob("pybuild-add-*"))
    with serving(Endless) as host:
        (tmp_path / "Dockerfile").write_text(f"FROM pybuild/busybox\nADD http://{host}/huge.bin /huge.bin\n")
        watch = Watch(pybuild.root)
        proc = start(pybuild.root, "--progress", "plain", str(tmp_path), stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
        read_until(proc.stderr.fileno(), [b"] ADD http://"])
        time.sleep(0.5)
        interrupt(proc, lambda: proc.send_signal(signal.SIGINT))
    watch.assert_unchanged(proc.pid, "no sleep in this build")
    assert proc.returncode == 130
    assert set(Path(tempfile.gettempdir()).glob("pybuild-add-*")) == before
