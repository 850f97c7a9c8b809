"""Scenario 10: a CI runner that starts empty, with a remote cache and without, for the testdata app.

A private registry (Debian's docker-registry, distribution 2.8, on a free 127.0.0.1 port, as the tests start it)
holds each tool's cache, written once by "runner A" (untimed): pybuild `--cache-to type=registry,ref=…,mode=max`;
docker's BuildKit (dockerd 20.10 without buildx) `--build-arg BUILDKIT_INLINE_CACHE=1` and a push of the image.
Each timed run is a fresh runner: an empty store holding only the same base image (pybuild: the busybox base
rebuilt from a cache of it, so its digest is runner A's; docker: every image but the base removed and the build
cache pruned), then the app built with `--cache-from` ("fresh runner with remote cache") or without it ("fresh
runner cold"); the four contenders alternate. Bytes transferred are the response bytes of the GETs the registry
logs during the run (its access log: `"GET … HTTP/1.1" 200 <bytes>`); nothing is uploaded in a timed run.
"""
from __future__ import annotations

import re
import shutil
import socket
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from bench.data import app_context
from bench.harness import PYBUILD, Bench, Row
from bench.proc import BenchError, Sample, run
from bench.tools import Docker, Pybuild, phases

APP_TAG = "me/app"
WITH = {"pybuild": "pybuild", "docker": "docker"}  # fresh runner with remote cache (the row's main series)
COLD = {"pybuild": "pybuild cold", "docker": "docker cold"}
CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: 127.0.0.1:{port}
"""
_SIZE = re.compile(r'"GET [^"]*" \d{3} (\d+)')


class Registry:
    """A throw-away docker-registry; `transferred` reads its access log from an offset."""

    def __init__(self, work: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise BenchError("docker-registry is not installed (apt-get install docker-registry)")
        work.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        (work / "config.yml").write_text(CONFIG.format(storage=work / "storage", port=port))
        self.host = f"127.0.0.1:{port}"
        self.log = work / "registry.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([binary, "serve", str(work / "config.yml")], stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise BenchError(f"docker-registry did not start: {self.log.read_text()[-300:]}")
                time.sleep(0.05)

    def offset(self) -> int:
        return self.log.stat().st_size

    def transferred(self, since: int) -> tuple[int, int]:
        """(GET requests, response bytes of those GETs) logged after ``since``."""
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        sizes = [int(m.group(1)) for m in _SIZE.finditer(text)]
        return len(sizes), sum(sizes)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _pybuild_fresh(tool: Pybuild, bb_cache: Path) -> None:
    """An empty store whose busybox base is runner A's (rebuilt from a local cache of it: the same digest)."""
    tool._drop()  # noqa: SLF001 (the tool's own store bookkeeping)
    tool.generation += 1
    tool._create()  # noqa: SLF001
    run(tool.argv(tool.busybox / "Dockerfile", tool.busybox, "pybuild/busybox",
                  ["--cache-from", f"type=local,src={bb_cache}"]), cwd=str(tool.src))


def _docker_fresh(tool: Docker) -> None:
    """Every image but the busybox base removed and the build cache pruned: a runner holding only the base."""
    keep = run([tool.CLIENT, "images", "-q", "pybuild/busybox"], env=tool.env).stdout.split()
    ids = set(run([tool.CLIENT, "images", "-aq"], env=tool.env).stdout.split()) - set(keep)
    if ids:
        run([tool.CLIENT, "image", "rm", "-f", *sorted(ids)], env=tool.env)
    run([tool.CLIENT, "builder", "prune", "-af"], env=tool.env)


def _counted(registry: Registry, facts: dict[str, list[int]], name: str, build) -> Sample:
    since = registry.offset()
    sample = build()
    requests, size = registry.transferred(since)
    facts.setdefault(f"{name}: bytes downloaded", []).append(size)
    facts.setdefault(f"{name}: GET requests", []).append(requests)
    return sample


def _pybuild(tool: Pybuild, registry: Registry, bench: Bench, app: Path, facts: dict) -> list:
    bb_cache = bench.tmp / "remotecache-busybox"
    tool.fresh()
    run(tool.argv(tool.busybox / "Dockerfile", tool.busybox, "pybuild/busybox",
                  ["--cache-to", f"type=local,dest={bb_cache},mode=max"]), cwd=str(tool.src))
    ref = f"{registry.host}/bench/pybuild-cache:app"
    run(tool.argv(app / "Dockerfile", app, APP_TAG, ["--cache-to", f"type=registry,ref={ref},mode=max"]),
        cwd=str(tool.src))

    def measure(extra: list[str], name: str):
        def once(_: int) -> Sample:
            _pybuild_fresh(tool, bb_cache)

            def build() -> Sample:
                done = run(tool.argv(app / "Dockerfile", app, APP_TAG, extra), cwd=str(tool.src))
                return Sample(done.sample.wall, done.sample.rss_kib, phases(done.stderr))
            return _counted(registry, facts, name, build)
        return once
    return [(WITH["pybuild"], measure(["--cache-from", f"type=registry,ref={ref}"], WITH["pybuild"])),
            (COLD["pybuild"], measure([], COLD["pybuild"]))]


def _docker(tool: Docker, registry: Registry, app: Path, facts: dict) -> list:
    image = f"{registry.host}/bench/docker-app:cache"
    tool.fresh()
    inline = ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    run([tool.CLIENT, "build", "-q", "--network", "host", *inline, "-f", str(app / "Dockerfile"), "-t", image,
         str(app)], env=tool.env)
    run([tool.CLIENT, "push", image], env=tool.env)

    def measure(extra: list[str], name: str):
        def once(_: int) -> Sample:
            _docker_fresh(tool)
            argv = [tool.CLIENT, "build", "-q", "--network", "host", *inline, *extra, "-f", str(app / "Dockerfile"),
                    "-t", APP_TAG, str(app)]
            return _counted(registry, facts, name, lambda: run(argv, env=tool.env).sample)
        return once
    return [(WITH["docker"], measure(["--cache-from", image], WITH["docker"])),
            (COLD["docker"], measure([], COLD["docker"]))]


def remote_cache_rows(bench: Bench) -> list[Row]:
    """(10) Fresh CI runner: the app with a registry cache vs cold, pybuild and docker's BuildKit, alternated."""
    row = Row("10-remote-cache", "fresh runner with remote cache (registry) vs fresh runner cold, app",
              target="pybuild with cache ≤ 0.5 × docker with cache")
    app = app_context(bench.tmp / "app-remotecache")
    registry = Registry(bench.tmp / "remotecache-registry")
    facts: dict[str, list[int]] = {}
    try:
        contenders = []
        for tool in bench.tools:
            if tool.name == PYBUILD and isinstance(tool, Pybuild):
                bench.prepare(row, tool, lambda t=tool: contenders.extend(_pybuild(t, registry, bench, app, facts)))
            elif isinstance(tool, Docker):
                bench.prepare(row, tool, lambda t=tool: contenders.extend(_docker(t, registry, app, facts)))
        bench.alternate(row, contenders)
    finally:
        registry.stop()
    for name, values in facts.items():
        row.facts[name] = statistics.median(values[-bench.runs:])  # the counted runs (after the warm-ups)
    row.check_ratio("docker", 0.5)
    row.limit = "downloaded (median): " + ", ".join(
        f"{name} {row.facts[f'{name}: bytes downloaded'] / 1e6:.2f} MB in {row.facts[f'{name}: GET requests']:.0f} GETs"
        for name in (*WITH.values(), *COLD.values()) if f"{name}: bytes downloaded" in row.facts)
    return [row]
