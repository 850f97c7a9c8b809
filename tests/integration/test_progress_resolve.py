"""Issue 25: a base image being resolved shows BuildKit's `[internal] load metadata for IMAGE` with a running
timer, in the tty view (under a pty) and in plain, against a registry stub that accepts connections and never
answers; killed, the build leaves nothing behind (processes, the store's tmp/, connections to the stub)."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import termios
import threading

import pytest

from tests.integration.test_cancel import Watch, start

pytestmark = pytest.mark.slow

NEVER = "never-started-sleep-4c1e"  # no process names this: Watch then checks only the build's own helpers


class SilentRegistry:
    """Accepts every TCP connection on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def all_closed_by_peer(self) -> bool:
        """Every connection the build opened is closed from its side: after its request, recv sees EOF."""
        for conn in self.conns:
            conn.settimeout(30)
            while conn.recv(65536):
                pass
        return True

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join(timeout=10)
        for conn in self.conns:
            conn.close()


@pytest.fixture
def registry():
    stub = SilentRegistry()
    yield stub
    stub.close()


def timers(fd: int, pattern: re.Pattern, count: int) -> tuple[list[float], str]:
    """Read fd incrementally until `pattern` (one group: seconds) has matched `count` distinct values; 60 s guard."""
    text, seen = "", []
    while len(seen) < count:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"no output for 60 s; so far:\n{text}"
        chunk = os.read(fd, 65536)
        assert chunk, f"output ended; so far:\n{text}"
        text += chunk.decode(errors="replace")
        for value in (float(v) for v in pattern.findall(text)):
            if value not in seen:
                seen.append(value)
    return seen, text


def stop(proc: subprocess.Popen, watch: Watch, registry: SilentRegistry) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 130
    assert registry.conns and registry.all_closed_by_peer()
    watch.assert_unchanged(proc.pid, NEVER)


def test_plain_shows_the_resolve_with_a_running_timer(pybuild, tmp_path, registry):
    (tmp_path / "Dockerfile").write_text(f"FROM 127.0.0.1:{registry.port}/x\nRUN true\n")
    watch = Watch(pybuild.root)
    proc = start(pybuild.root, "--progress", "plain", str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        shown, text = timers(proc.stderr.fileno(), re.compile(r"^#meta-\d+ running (\d+\.\d)s$", re.M), 2)
        title = f"[internal] load metadata for 127.0.0.1:{registry.port}/x:latest"
        assert re.search(rf"^#(meta-\d+) {re.escape(title)}$", text, re.M), text
        assert shown[0] <= 1.0 and shown[1] > shown[0], text  # shown within a second, and it advances
    finally:
        stop(proc, watch, registry)
    rest = proc.stderr.read().decode()
    assert re.search(r"^#meta-\d+ ERROR: interrupted$", rest, re.M) and "Traceback" not in rest, rest


def test_tty_shows_the_resolve_with_a_running_timer(pybuild, tmp_path, registry):
    (tmp_path / "Dockerfile").write_text(f"FROM 127.0.0.1:{registry.port}/x\nRUN true\n")
    watch = Watch(pybuild.root)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 140, 0, 0))
    proc = start(pybuild.root, "--progress", "tty", str(tmp_path), stdin=subprocess.DEVNULL, stdout=slave,
                 stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        title = re.escape(f"[internal] load metadata for 127.0.0.1:{registry.port}/x:latest")
        shown, text = timers(master, re.compile(rf"=> \S+\s+{title} +(\d+\.\d)s"), 3)
        assert "[+] Building" in text
        assert shown[0] <= 1.0 and max(shown) > shown[0], text
    finally:
        stop(proc, watch, registry)
        try:
            while select.select([master], [], [], 0.5)[0]:
                text += os.read(master, 65536).decode(errors="replace")
        except OSError:  # EIO once the build is gone
            pass
        os.close(master)
    assert "Traceback" not in text and text.rfind("\x1b[?25h") > text.rfind("\x1b[?25l") >= 0, text
