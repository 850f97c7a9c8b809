"""Scenario 7: the per-RUN cost of RUN's default (bridge) network: 20 trivial RUNs, default vs --network none.

pybuild runs inside a network namespace this scenario makes and keeps for all its rounds (an `unshare --net`
holder, entered with nsenter), so the bridge and its NAT rule are made once there, as on a host after the first
build, and the machine's own network is never configured. Peers are not measured here: the bench runs buildah
with `--isolation chroot` (no network namespace at all) and dockerd with `--network host`.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bench.harness import PYBUILD, Bench, Row
from bench.proc import BenchError, Sample
from bench.tools import Pybuild, phases, run

RUNS = 20
NONE = "pybuild --network none"


def _dockerfile(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["FROM pybuild/busybox"] + [f"RUN echo {n}" for n in range(RUNS)]
    (directory / "Dockerfile").write_text("\n".join(lines) + "\n")
    return directory


def _wait_until_unshared(holder: subprocess.Popen) -> None:
    """Until the holder is in its own namespace: entering it sooner would configure this machine's network."""
    ours = os.stat("/proc/self/ns/net").st_ino
    deadline = time.monotonic() + 30
    while os.stat(f"/proc/{holder.pid}/ns/net").st_ino == ours:
        if holder.poll() is not None or time.monotonic() > deadline:
            raise BenchError("unshare --net did not give the scenario a network namespace")
        time.sleep(0.01)


def network_rows(bench: Bench) -> list[Row]:
    """(7) 20 × `RUN echo N`, no cache: the default network against none, alternating."""
    row = Row("7-network", f"{RUNS} trivial RUNs, --no-cache: default (bridge) network vs --network none",
              target="≤ 20 ms per RUN for the bridge")
    tool = next((t for t in bench.tools if isinstance(t, Pybuild)), None)
    if tool is None:
        return [row]
    context = _dockerfile(bench.tmp / "network-runs")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    try:
        _wait_until_unshared(holder)
        enter = ["nsenter", f"--net=/proc/{holder.pid}/ns/net"]

        def measure(extra: list[str]):
            def once(_: int) -> Sample:
                argv = tool.argv(context / "Dockerfile", context, "bench/network", ["--no-cache", *extra])
                done = run([*enter, *argv], cwd=str(tool.src))
                return Sample(done.sample.wall, done.sample.rss_kib, phases(done.stderr))
            return once

        bench.prepare(row, tool, lambda: tool.fresh())
        bench.alternate(row, [(PYBUILD, measure(["--network", "default"])), (NONE, measure(["--network", "none"]))])
    except BenchError as exc:
        row.missing[PYBUILD] = str(exc).splitlines()[0]
    finally:
        holder.kill()
        holder.wait()
    if PYBUILD in row.series and NONE in row.series:
        per_run = (row.series[PYBUILD].median - row.series[NONE].median) / RUNS
        row.facts["bridge cost per RUN (ms)"] = round(per_run * 1000, 1)
        row.limit = f"{per_run * 1000:.1f} ms per RUN (median difference / {RUNS})"
        row.checks["≤ 20 ms per RUN"] = per_run <= 0.020
    return [row]
