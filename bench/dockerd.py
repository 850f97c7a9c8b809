"""A throw-away docker daemon: Debian's dockerd on its own data-root, exec-root and unix socket.

No iptables rules and no bridge (`--iptables=false --ip-masq=false --bridge=none`), so it touches neither the
host's firewall nor its interfaces; containers run with `--network none` or `host`. Used by the bench (docker
as a peer) and by the tests (`docker load` as a referee). `start_dockerd` waits until `docker version` answers
through the socket; `Dockerd.stop` ends the daemon (SIGTERM, then SIGKILL of its process group). What the
daemon leaves mounted under its work directory is the caller's to check and detach (`proc.unmount_all`).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLIENT = "/usr/bin/docker"  # the Debian 20.10 client; a newer one without buildx refuses DOCKER_BUILDKIT=1


class DockerdUnavailable(Exception):
    pass


@dataclass
class Dockerd:
    work: Path
    process: subprocess.Popen
    host: str  # DOCKER_HOST of its socket

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the docker client against this daemon; output captured."""
        return subprocess.run([CLIENT, *args], env={**os.environ, "DOCKER_HOST": self.host},
                              capture_output=True, timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_dockerd(work: Path, wait: float = 60) -> Dockerd:
    """Start dockerd under `work`; DockerdUnavailable (with the log's last lines) when it is missing or fails."""
    if shutil.which("dockerd") is None or not Path(CLIENT).exists():
        raise DockerdUnavailable("dockerd or the docker client is not installed (apt-get install docker.io)")
    work.mkdir(parents=True, exist_ok=True)
    host = f"unix://{work}/docker.sock"
    argv = ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=overlay2",
            f"--data-root={work}/data", f"--exec-root={work}/exec", f"--pidfile={work}/dockerd.pid",
            f"--host={host}"]
    with open(work / "dockerd.log", "wb") as log:
        daemon = Dockerd(work, subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True), host)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and daemon.process.poll() is None:
        if daemon.docker("version", timeout=30).returncode == 0:
            return daemon
        time.sleep(0.3)
    daemon.stop()
    tail = (work / "dockerd.log").read_text(errors="replace").splitlines()[-3:]
    raise DockerdUnavailable("dockerd did not start: " + " | ".join(tail))
