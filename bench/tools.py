"""The builders under test, each on its own throw-away store below the bench's temp directory.

Every tool offers the same four calls: `fresh()` (empty store plus the busybox base, untimed), `build(...)`
and `build_export(...)` (timed), `close()` (store removed, nothing left mounted). A peer that cannot run on
this machine raises `Unavailable` from its constructor with the reason, which the report shows.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.data import MARKER, REPO
from bench.dockerd import CLIENT, DockerdUnavailable, start_dockerd
from bench.proc import BenchError, Sample, daemon_peak_kib, daemon_peak_reset, run, unmount_all


class Unavailable(Exception):
    """This peer cannot run here; str(exc) says why."""


class Tool:
    """Common bookkeeping: a work directory, a store generation counter, the busybox context."""

    name = "tool"

    def __init__(self, work: Path, busybox: Path) -> None:
        self.work = work
        self.busybox = busybox
        self.generation = 0
        work.mkdir(parents=True, exist_ok=True)

    def fresh(self) -> None:
        """Drop the store and start an empty one holding only the busybox base image (untimed)."""
        self._drop()
        self.generation += 1
        self._create()
        self.build(self.busybox / "Dockerfile", self.busybox, "pybuild/busybox")

    def close(self) -> None:
        self._drop()
        left = unmount_all(self.work)
        shutil.rmtree(self.work, ignore_errors=True)
        if left:
            raise BenchError(f"{self.name} left mounts behind (now detached): {', '.join(left)}")

    def _create(self) -> None: ...

    def _drop(self) -> None: ...

    def build(self, dockerfile: Path, context: Path, tag: str, *, no_cache: bool = False,
              jobs: int | None = None) -> Sample:
        raise NotImplementedError

    def build_export(self, dockerfile: Path, context: Path, tag: str, compression: str, dest: Path) -> Sample:
        """Build and write an OCI layout at dest with layers compressed as asked (always rebuilt)."""
        raise NotImplementedError


class Pybuild(Tool):
    """`python -m builder build` of the source tree `src` (default: this checkout), rawjson progress."""

    name = "pybuild"

    def __init__(self, work: Path, busybox: Path, src: Path = REPO, name: str = "pybuild") -> None:
        super().__init__(work, busybox)
        self.src = src
        self.name = name
        # As an installed package is: without .pyc files (this machine sets PYTHONDONTWRITEBYTECODE=1)
        # every run would compile ~50 modules again, ~70 ms that no user pays.
        run([sys.executable, "-m", "compileall", "-q", *(str(src / d) for d in ("builder", "cache", "grammar"))])

    @property
    def root(self) -> Path:
        return self.work / f"store-{self.generation}"

    def _create(self) -> None:
        self.root.mkdir(parents=True)

    def _drop(self) -> None:
        unmount_all(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def argv(self, dockerfile: Path, context: Path, tag: str, extra: list[str]) -> list[str]:
        # --network host unless a scenario picks one: as docker is run here, and so that the bench never makes
        # pybuild's bridge in the machine's own network namespace (scenario 7 measures the bridge in one of its own)
        network = [] if "--network" in extra else ["--network", "host"]
        return [sys.executable, "-m", "builder", "build", "--root", str(self.root), "--progress", "rawjson",
                "-f", str(dockerfile), "-t", tag, *network, *extra, str(context)]

    def build(self, dockerfile, context, tag, *, no_cache=False, jobs=None, extra=()) -> Sample:
        flags = [*(["--no-cache"] if no_cache else []), *([f"--jobs={jobs}"] if jobs else []), *extra]
        done = run(self.argv(dockerfile, context, tag, flags), cwd=str(self.src))
        return Sample(done.sample.wall, done.sample.rss_kib, phases(done.stderr))

    def build_export(self, dockerfile, context, tag, compression, dest) -> Sample:
        return self.build(dockerfile, context, tag, no_cache=True,
                          extra=("--compression", compression, "--output", f"type=oci,dest={dest}"))


def phases(rawjson: str) -> dict[str, float]:
    """Seconds per step from pybuild's rawjson events ("step:<title>"), and "export": from the RUN's
    MARKER line to the end of that step (layer tar, compression, blob store)."""
    starts: dict[int, tuple[str, float]] = {}
    marker: dict[int, float] = {}
    out: dict[str, float] = {}
    for line in rawjson.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        kind, number = event.get("type"), event.get("number")
        if kind == "StepStarted":
            starts[number] = (event["title"], event["ts"])
        elif kind == "StepLog" and MARKER in event.get("text", ""):
            marker[number] = event["ts"]
        elif kind in ("StepDone", "StepCached") and number in starts:
            title, began = starts[number]
            out[f"step:{title}"] = event["ts"] - began
            if number in marker:
                out["export"] = event["ts"] - marker[number]
    return out


class Buildah(Tool):
    """`buildah bud --layers --runtime runc --isolation chroot` on overlay storage in a temp root.

    overlay, not vfs: it is buildah's production driver, works here as root on ext4, and vfs would copy
    the whole root file system for every step, which would make the comparison meaningless."""

    name = "buildah"

    def __init__(self, work: Path, busybox: Path) -> None:
        if shutil.which("buildah") is None:
            raise Unavailable("buildah is not installed (make bench installs it)")
        super().__init__(work, busybox)

    def glob(self) -> list[str]:
        base = self.work / f"store-{self.generation}"
        return ["buildah", "--root", str(base / "root"), "--runroot", str(base / "run"),
                "--storage-driver", "overlay"]

    def _drop(self) -> None:
        if self.generation == 0:
            return
        for cmd in (["rm", "--all"], ["rmi", "--all", "--force"]):
            subprocess.run(self.glob() + cmd, capture_output=True)
        base = self.work / f"store-{self.generation}"
        unmount_all(base)
        shutil.rmtree(base, ignore_errors=True)

    def build(self, dockerfile, context, tag, *, no_cache=False, jobs=None) -> Sample:
        argv = self.glob() + ["bud", "--layers", "--runtime", "runc", "--isolation", "chroot", "-q",
                              "-f", str(dockerfile), "-t", tag]
        argv += (["--no-cache"] if no_cache else []) + ([f"--jobs={jobs}"] if jobs else [])
        return run(argv + [str(context)]).sample

    def build_export(self, dockerfile, context, tag, compression, dest) -> Sample:
        built = self.build(dockerfile, context, tag, no_cache=True)
        pushed = run(self.glob() + ["push", "--compression-format", compression, tag, f"oci:{dest}:latest"])
        return built.plus(pushed.sample)


class Docker(Tool):
    """dockerd on a temp data-root (no iptables, no bridge), driven by the docker 20.10 client with its
    integrated BuildKit: the classic builder rejects the app's `COPY --chmod` ("requires BuildKit")."""

    name = "docker"
    CLIENT = CLIENT

    def __init__(self, work: Path, busybox: Path) -> None:
        super().__init__(work, busybox)
        try:
            self.dockerd = start_dockerd(work, wait=30)
        except DockerdUnavailable as exc:
            unmount_all(self.work)
            shutil.rmtree(self.work, ignore_errors=True)
            raise Unavailable(str(exc)) from None
        self.daemon = self.dockerd.process
        self.env = {"DOCKER_HOST": self.dockerd.host, "DOCKER_BUILDKIT": "1"}

    def docker(self, *args: str) -> Sample:
        return run([self.CLIENT, *args], env=self.env).sample

    def _drop(self) -> None:
        if self.generation == 0:
            return
        ids = run([self.CLIENT, "images", "-aq"], env=self.env).stdout.split()
        if ids:
            self.docker("image", "rm", "-f", *sorted(set(ids)))
        self.docker("builder", "prune", "-af")

    def close(self) -> None:
        try:
            self._drop()
        finally:
            self.generation = 0  # the store goes with the data-root below
            self.dockerd.stop()
            super().close()

    def build(self, dockerfile, context, tag, *, no_cache=False, jobs=None) -> Sample:
        """jobs is ignored: BuildKit always runs independent stages at once."""
        daemon_peak_reset(self.daemon.pid)
        argv = ["build", "-q", "--network", "host", "-f", str(dockerfile), "-t", tag]
        client = self.docker(*argv, *(["--no-cache"] if no_cache else []), str(context))
        return Sample(client.wall, max(client.rss_kib, daemon_peak_kib(self.daemon.pid)))

    def build_export(self, dockerfile, context, tag, compression, dest) -> Sample:
        raise Unavailable("dockerd's integrated BuildKit exports only to its image store (no OCI exporter "
                          "with a compression choice without buildx)")
