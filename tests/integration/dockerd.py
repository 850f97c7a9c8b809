"""A throw-away docker daemon for referee tests: Debian's dockerd on a temporary data-root.

`start_dockerd` runs `dockerd` with its own data-root, exec-root and unix socket, no iptables rules and no
bridge (so it touches neither the host's firewall nor its interfaces; containers run with `--network none`),
waits until `docker version` answers through that socket and returns the client environment. `stop` ends
the daemon (SIGTERM, then SIGKILL of its process group), unmounts what it left under the data-root and
removes the directory. Tests skip with the reason when dockerd is missing or cannot start here.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLIENT = "/usr/bin/docker"


class DockerdUnavailable(Exception):
    pass


@dataclass
class TestDockerd:
    __test__ = False  # not a test class

    work: Path
    process: subprocess.Popen
    env: dict[str, str]

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([CLIENT, *args], env=self.env, capture_output=True, timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        _unmount_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """Lazily unmount every mount point below `root`, deepest first (overlay2 layers, the exec-root's netns)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def start_dockerd(work: Path) -> TestDockerd:
    if shutil.which("dockerd") is None or not Path(CLIENT).exists():
        raise DockerdUnavailable("dockerd / docker client not installed (scripts/setup.sh test installs docker.io)")
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DOCKER_HOST": f"unix://{work}/docker.sock"}
    log = open(work / "dockerd.log", "wb")
    argv = ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=overlay2",
            f"--data-root={work}/data", f"--exec-root={work}/exec", f"--pidfile={work}/dockerd.pid",
            f"--host={env['DOCKER_HOST']}"]
    process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    daemon = TestDockerd(work, process, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if daemon.docker("version", timeout=30).returncode == 0:
            return daemon
        time.sleep(0.3)
    tail = (work / "dockerd.log").read_text(errors="replace").splitlines()[-3:]
    daemon.stop()
    raise DockerdUnavailable("dockerd did not start: " + " | ".join(tail))
