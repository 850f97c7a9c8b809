"""Scenario 9: rootless pybuild against root pybuild (and rootless podman where it starts), same rounds.

The bench (root) makes a user with subordinate ranges (`useradd`, `usermod --add-subuids/--add-subgids`, removed
at the end with its ranges) and runs pybuild as it through `setpriv` with the system interpreter and PYTHONPATH
naming the source tree (as tests/integration/rootless_users.py does). Cold (fresh store holding the busybox base)
and fully cached app builds alternate root, rootless and podman; the target is rootless ≤ 1.2 × root (medians).
Every contender uses the host's network (`--network host`): rootless RUNs would otherwise need /dev/net/tun,
which is 0600 root on this machine (a container). Podman is Debian's (`podman build --layers`, rootless, overlay
storage driver, cgroupfs manager, file events) in the same user's own XDG directories.
RUN's user-mode network is measured beside (network_row): slirp4netns against pasta, set-up per build and a 50 MB
fetch, in a network and user namespace of the scenario's own (root-mapped, so /dev/net/tun opens).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path

from bench.data import app_context, busybox_context
from bench.harness import PYBUILD, Bench, Row, Series
from bench.proc import BenchError, Sample, run
from bench.tools import Pybuild, Tool, Unavailable, phases

SYSTEM_PYTHON = "/usr/bin/python3"
ROOTLESS, PODMAN = "pybuild-rootless", "podman-rootless"
SUBIDS = (4_000_000, 65536)


class BenchUser:
    """A throw-away user with subordinate ranges and a home the bench can read; `close()` removes both."""

    def __init__(self) -> None:
        if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("newuidmap") is None:
            raise Unavailable("needs root, setpriv and newuidmap (uidmap) to make a rootless user")
        self.name = f"pbbench{uuid.uuid4().hex[:8]}"
        self.home = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        os.chmod(self.home, 0o755)
        done = subprocess.run(["useradd", "-M", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", "-d", str(self.home),
                               "-s", "/usr/sbin/nologin", self.name], capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(self.home, ignore_errors=True)
            raise Unavailable(f"useradd: {done.stderr.strip()}")
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        span = f"{SUBIDS[0]}-{SUBIDS[0] + SUBIDS[1] - 1}"
        subprocess.run(["usermod", "--add-subuids", span, "--add-subgids", span, self.name], check=True,
                       capture_output=True)
        os.chown(self.home, self.uid, self.gid)

    def env(self) -> dict[str, str]:
        runtime = self.home / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.chown(runtime, self.uid, self.gid)
        return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(self.home), "USER": self.name,
                "XDG_RUNTIME_DIR": str(runtime), "PYTHONDONTWRITEBYTECODE": "1"}

    def argv(self, command: list[str], extra_env: dict[str, str] | None = None) -> list[str]:
        env = {**self.env(), **(extra_env or {})}
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "env", "-i",
                *(f"{k}={v}" for k, v in env.items()), *command]

    def own(self, path: Path) -> None:
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)

    def close(self) -> None:
        """End what still runs as this user (rootless podman leaves its pause process), then remove it."""
        ids = {self.uid, *range(SUBIDS[0], SUBIDS[0] + SUBIDS[1])}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid in ids:
                        os.kill(int(entry.name), 9)
        span = f"{SUBIDS[0]}-{SUBIDS[0] + SUBIDS[1] - 1}"
        subprocess.run(["usermod", "--del-subuids", span, "--del-subgids", span, self.name], capture_output=True)
        subprocess.run(["userdel", self.name], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


class RootlessPybuild(Tool):
    """pybuild of `src` run as the bench user (rootless mode), its store in the user's home."""

    name = ROOTLESS

    def __init__(self, user: BenchUser, busybox: Path, src: Path) -> None:
        self.user = user
        super().__init__(user.home / "rootless", busybox)
        user.own(self.work)
        self.src = src

    @property
    def root(self) -> Path:
        return self.work / f"store-{self.generation}"

    def _drop(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def build(self, dockerfile, context, tag, *, no_cache=False, jobs=None) -> Sample:
        python_path = f"{self.src}:{sysconfig.get_paths()['purelib']}"
        argv = self.user.argv([SYSTEM_PYTHON, "-m", "builder", "build", "--root", str(self.root), "--progress",
                               "rawjson", "-f", str(dockerfile), "-t", tag, "--network", "host",
                               *(["--no-cache"] if no_cache else []), str(context)], {"PYTHONPATH": python_path})
        done = run(argv, cwd=str(self.user.home))
        return Sample(done.sample.wall, done.sample.rss_kib, phases(done.stderr))


class RootlessPodman(Tool):
    """`podman build --layers` as the bench user, storage under its home (overlay driver, no fuse)."""

    name = PODMAN

    def __init__(self, user: BenchUser, busybox: Path) -> None:
        if shutil.which("podman") is None:
            raise Unavailable("podman is not installed (scripts/setup.sh bench installs it)")
        self.user = user
        super().__init__(user.home / "podman", busybox)
        user.own(self.work)

    def podman(self, *args: str) -> Sample:
        store = self.work / f"store-{self.generation}"
        argv = self.user.argv(["podman", "--root", str(store / "root"), "--runroot", str(store / "run"),
                               "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
                               "--events-backend", "file", *args])
        try:
            return run(argv, cwd=str(self.user.home), timeout=600).sample
        except BenchError as exc:
            raise Unavailable(" ".join(str(exc).split("\n", 1)[-1].split())[-400:]) from None

    def _drop(self) -> None:
        store = self.work / f"store-{self.generation}"
        if store.exists():
            with contextlib.suppress(Unavailable):
                self.podman("system", "reset", "--force")
            shutil.rmtree(store, ignore_errors=True)

    def build(self, dockerfile, context, tag, *, no_cache=False, jobs=None) -> Sample:
        return self.podman("build", "--layers", "--network", "host", "-q", "-f", str(dockerfile), "-t", tag,
                           *(["--no-cache"] if no_cache else []), str(context))


def rootless_rows(bench: Bench) -> list[Row]:
    """(9) cold and cached app builds: root pybuild, rootless pybuild, rootless podman, alternating."""
    cold = Row("9-rootless-cold", "cold app build: root vs rootless pybuild (and rootless podman)",
               target="rootless ≤ 1.2 × root")
    cached = Row("9-rootless-cached", "fully cached app rebuild: root vs rootless pybuild (and rootless podman)",
                 target="rootless ≤ 1.2 × root")
    root = next((t for t in bench.tools if isinstance(t, Pybuild) and t.name == PYBUILD), None)
    if root is None:
        return [cold, cached]
    try:
        user = BenchUser()
    except Unavailable as exc:
        cold.missing[ROOTLESS] = cached.missing[ROOTLESS] = str(exc)
        return [cold, cached]
    try:
        _measure(bench, user, root, cold, cached)
    finally:
        user.close()
    return [cold, cached, network_row(bench, root.src)]


def _measure(bench: Bench, user: BenchUser, root: Pybuild, cold: Row, cached: Row) -> None:
    busybox = busybox_context(user.home / "busybox-ctx")
    context = app_context(user.home / "app")
    user.own(busybox)
    user.own(context)
    contenders: list[Tool] = [root, RootlessPybuild(user, busybox, root.src)]
    try:
        contenders.append(RootlessPodman(user, busybox))
    except Unavailable as exc:
        cold.missing[PODMAN] = cached.missing[PODMAN] = str(exc)
    dockerfile = context / "Dockerfile"

    def cold_once(tool: Tool):
        def once(_: int) -> Sample:
            tool.fresh()
            return tool.build(dockerfile, context, "me/app")
        return once

    bench.alternate(cold, [(t.name, cold_once(t)) for t in contenders])
    ready = [t for t in contenders if t.name in cold.series]
    for tool in ready:
        bench.prepare(cached, tool, lambda tool=tool: tool.build(dockerfile, context, "me/app"))
    bench.alternate(cached, [(t.name, lambda _, t=t: t.build(dockerfile, context, "me/app")) for t in ready
                             if t.name not in cached.missing])
    for row in (cold, cached):
        _ratios(row)
    for tool in contenders[1:]:
        with contextlib.suppress(BenchError, Unavailable):
            tool.close()


def _ratios(row: Row) -> None:
    if PYBUILD in row.series and ROOTLESS in row.series:
        ratio = row.series[ROOTLESS].median / row.series[PYBUILD].median
        row.facts["rootless / root (medians)"] = round(ratio, 3)
        row.limit = f"rootless {row.series[ROOTLESS].median:.3f} s vs root {row.series[PYBUILD].median:.3f} s"
        row.checks["rootless ≤ 1.2 × root"] = ratio <= 1.2
    if PODMAN in row.series and ROOTLESS in row.series:
        row.facts["rootless pybuild / rootless podman"] = round(
            row.series[ROOTLESS].median / row.series[PODMAN].median, 3)


# --- RUN's user-mode network: slirp4netns (what pybuild uses) against pasta, in one run ---------------------------
NET_OUTER = r"""
import json, os, subprocess, sys, tempfile, threading, socket
src, inner, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
for argv in (["link", "set", "lo", "up"], ["link", "add", "pbb0", "type", "veth", "peer", "name", "pbb1"],
             ["addr", "add", "10.231.0.1/24", "dev", "pbb0"], ["link", "set", "pbb0", "up"],
             ["link", "set", "pbb1", "up"], ["route", "add", "default", "via", "10.231.0.2", "dev", "pbb0"]):
    subprocess.run(["ip", *argv], check=True)
data = tempfile.TemporaryFile()
data.write(os.urandom(1 << 20) * (size >> 20)); data.flush()
server = socket.socket(); server.bind(("10.231.0.1", 18082)); server.listen(8)
def serve():
    while True:
        conn, _ = server.accept()
        os.sendfile(conn.fileno(), data.fileno(), 0, size); conn.close()
threading.Thread(target=serve, daemon=True).start()
done = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", inner, src, str(size)],
                      capture_output=True, text=True)
sys.stdout.write(done.stdout); sys.stderr.write(done.stderr); sys.exit(done.returncode)
"""
NET_INNER = r"""
import ctypes, json, os, signal, socket, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from builder import slirp
size = int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)

class Pasta(slirp.SlirpNetwork):
    def _start_slirp(self):
        pidfile = f"/tmp/pybuild-bench-pasta-{os.getpid()}.pid"
        done = subprocess.run(["pasta", "--config-net", "-t", "none", "-u", "none", "-T", "none", "-U", "none",
                               "--no-map-gw", "-a", "10.0.2.100", "-n", "24", "-g", "10.0.2.2", "-I", "tap0",
                               "-i", "pbb0", "--runas", "0:0", "-q", "-P", pidfile, "--netns",
                               f"/proc/self/fd/{self.fd}"], pass_fds=(self.fd,), capture_output=True, text=True)
        if done.returncode != 0:
            raise slirp.SlirpError("pasta: " + done.stderr.strip()[-200:])
        with open(pidfile) as f:
            self.pasta = int(f.read())
        os.unlink(pidfile)
    def close(self):
        if getattr(self, "pasta", 0):
            os.kill(self.pasta, signal.SIGKILL)
        super().close()

def fetch(fd):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        libc.setns(fd, 0x40000000)
        with socket.create_connection(("10.231.0.1", 18082), timeout=30) as s:
            started, n = time.perf_counter(), 0
            while chunk := s.recv(1 << 20):
                n += len(chunk)
        os.write(w, json.dumps([n, time.perf_counter() - started]).encode())
        os._exit(0)
    os.close(w)
    got = json.loads(os.read(r, 200))
    os.waitpid(pid, 0)
    return got

result = {"slirp4netns": {"setup": [], "mbps": []}, "pasta": {"setup": [], "mbps": []}}
for _ in range(5):
    for name, kind in (("slirp4netns", slirp.SlirpNetwork), ("pasta", Pasta)):
        started = time.perf_counter()
        try:
            net = kind()
        except (slirp.SlirpError, OSError) as exc:
            result[name]["error"] = str(exc)
            continue
        result[name]["setup"].append(time.perf_counter() - started)
        try:
            n, secs = fetch(net.fd)
            if n == size:
                result[name]["mbps"].append(n / secs / 1e6)
        finally:
            net.close()
print(json.dumps(result))
"""


def network_row(bench: Bench, src: Path) -> Row:
    """(9) set-up per build and 50 MB throughput of slirp4netns and pasta, alternating, in a namespace of its own."""
    import json

    row = Row("9-rootless-network", "RUN's user-mode network: set-up per build, slirp4netns vs pasta",
              target="the faster set-up at even throughput")
    for tool in ("slirp4netns", "pasta", "unshare", "ip"):
        if shutil.which(tool) is None:
            row.missing[tool] = f"{tool} is not installed"
            return row
    size = 50 << 20
    try:
        done = run(["unshare", "--net", sys.executable, "-c", NET_OUTER, str(src), NET_INNER, str(size)], timeout=600)
    except BenchError as exc:
        row.missing["slirp4netns"] = str(exc).splitlines()[-1]
        return row
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name, got in result.items():
        if got.get("error") or not got["setup"]:
            row.missing[name] = got.get("error", "no sample")
            continue
        row.series[name] = Series(tuple(Sample(s, 0) for s in got["setup"]))
        if got["mbps"]:
            row.facts[f"{name} MB/s (median of {len(got['mbps'])})"] = round(statistics.median(got["mbps"]))
    return row
