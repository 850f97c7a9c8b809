"""Scenarios 4-6: a large context in one COPY (and the image exported afterwards), a RUN writing a large layer exported with gzip and zstd,
and two independent stages built at once."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.data import STAGES, copy_dockerfile, stage_command, stages_dockerfile, touch_all, write_dockerfile
from bench.harness import LIMIT, PYBUILD, Bench, Measure, Row
from bench.limits import Limits, hash_pass, libraries
from bench.proc import BenchError, Sample, run
from bench.tools import Tool

COPY_STEP = "COPY . /data/"


def context_rows(bench: Bench, limits: Limits, context: Path, sample: bytes) -> list[Row]:
    """(4) cold COPY of the whole context; re-check after `touch` (content hashed again); unchanged re-check.

    The touched row measures hashlib's sha256 over the in-memory ``sample`` in the same rounds as the builds
    (as scenario 5 does for the compressors): the machine's speed drifts too much for a start-of-run figure."""
    sizes = bench.sizes
    label = f"{sizes.context_files} files / {sizes.context_bytes >> 20} MiB"
    dockerfile = copy_dockerfile(bench.tmp / "Dockerfile.copy")
    cold = Row("4-context-cold", f"context {label} in one COPY, cold", target="hashing ≥ 50% of sha256")
    cold = bench.alternate(cold, [(t.name, _cold(t, dockerfile, context)) for t in bench.tools])
    touched = Row("4-context-touched", f"context {label}, all mtimes touched (content re-hashed)",
                  target="hashing ≥ 50% of sha256")
    ready = [t for t in bench.tools if bench.prepare(touched, t, lambda t=t: t.build(dockerfile, context, "big"))]

    def after_touch(tool: Tool):
        def once(_: int):
            touch_all(context)
            return tool.build(dockerfile, context, "big")
        return once

    sha256 = f"{LIMIT}hashlib sha256"
    touched = bench.alternate(touched, [*[(t.name, after_touch(t)) for t in ready],
                                        (sha256, _library(sample, hash_pass))])
    limit = _library_rate(touched, sha256, sample)
    if PYBUILD in touched.series and limit and (step := touched.series[PYBUILD].phase_like(COPY_STEP)):
        rate = sizes.context_bytes / step / 1e6
        touched.facts |= {"hash_MBps": rate, "sha256_MBps": limit, "hash_fraction_of_sha256": rate / limit,
                          "start_sha256_MBps": limits.sha256,
                          "hash_fraction_of_start_sha256": rate / limits.sha256}
        touched.checks["hashing ≥ 50% of sha256"] = rate / limit >= 0.5
        touched.limit = (f"COPY step {step:.2f} s = {rate:.0f} MB/s = {rate / limit:.0%} of sha256 ({limit:.0f} MB/s, "
                         f"median of the same rounds; {rate / limits.sha256:.0%} of the start-of-run "
                         f"{limits.sha256:.0f} MB/s)")
    unchanged = Row("4-context-unchanged", f"context {label}, unchanged re-check", target="≤ 0.2 s")
    unchanged = bench.alternate(unchanged, [(t.name, lambda _, t=t: t.build(dockerfile, context, "big"))
                                            for t in ready])
    if PYBUILD in unchanged.series and (step := unchanged.series[PYBUILD].phase_like(COPY_STEP)):
        unchanged.facts["recheck_s"] = step
        unchanged.limit = f"COPY step re-check {step:.3f} s"
        unchanged.checks["re-check ≤ 0.2 s"] = step <= 0.2
    exported = Row("4-context-export", f"context {label}: the cold-built image exported afterwards "
                   "(pybuild save: gzip layers made then; docker save: its uncompressed layers)", target="reported")
    exported = bench.alternate(exported, [(t.name, _save_after_cold(t, dockerfile, context, bench.tmp))
                                          for t in bench.tools if t.name in (PYBUILD, "docker")])
    return [cold, touched, unchanged, exported]


def _save_after_cold(tool: Tool, dockerfile: Path, context: Path, tmp: Path) -> Measure:
    """A cold build (untimed), then the timed export of its image to an archive: `pybuild save` (the layers
    compressed with gzip now, as lazy compression leaves them) beside `docker save`."""
    def once(_: int):
        tool.fresh()
        tool.build(dockerfile, context, "big")
        dest = tmp / f"save-{tool.name}.tar"
        try:
            if tool.name == PYBUILD:
                argv = [sys.executable, "-m", "builder", "save", "--root", str(tool.root), "-o", str(dest), "big"]
                return run(argv, cwd=str(tool.src)).sample
            return run([tool.CLIENT, "save", "-o", str(dest), "big"], env=tool.env).sample
        finally:
            dest.unlink(missing_ok=True)
    return once


def _cold(tool: Tool, dockerfile: Path, context: Path):
    def once(_: int):
        tool.fresh()
        return tool.build(dockerfile, context, "big")
    return once


def export_rows(bench: Bench, limits: Limits, sample: bytes) -> list[Row]:
    """(5) RUN writes run_bytes of mixed data; build + OCI layout with gzip, then with zstd layers.

    The library's own throughput is measured as one more contender of the same rounds (one pass over the
    in-memory ``sample`` after each build): this machine's speed drifts by ±20% within minutes, so a
    fraction against a figure taken once at the start of the run says more about the drift than about
    pybuild. The start-of-run figure is kept in the facts for comparison."""
    size = bench.sizes.run_bytes
    dockerfile = write_dockerfile(bench.tmp / "Dockerfile.write", size)
    context = bench.tmp / "empty-context"
    context.mkdir(exist_ok=True)
    rows = []
    for compression, start_limit, floor, target in (
            ("gzip", limits.zlib_gzip6, 1.6, "export ≥ 1.6 × zlib; peak RSS ≤ 150 MiB"),
            ("zstd", limits.zstd3_threads, 0.8, "export ≥ 80% of zstandard; peak RSS ≤ 150 MiB")):
        row = Row(f"5-export-{compression}", f"RUN writes {size >> 20} MiB, build + {compression} OCI export",
                  target=target)
        libs = libraries(compression)
        contenders = [(t.name, _export(t, dockerfile, context, compression, bench.tmp)) for t in bench.tools]
        row = bench.alternate(row, [*contenders, *((f"{LIMIT}{n}", _library(sample, fn)) for n, fn in libs)])
        name = libs[0][0]
        limit = _library_rate(row, f"{LIMIT}{name}", sample)
        if PYBUILD in row.series and limit and (export := row.series[PYBUILD].phase("export")):
            rate = size / export / 1e6
            row.facts |= {"export_s": export, "export_MBps": rate, "limit_MBps": limit,
                          "export_fraction_of_limit": rate / limit, "start_limit_MBps": start_limit,
                          "export_fraction_of_start_limit": rate / start_limit,
                          "pybuild_peak_rss_mib": row.series[PYBUILD].peak_rss_mib}
            row.checks[f"export ≥ {floor:g} × limit"] = rate / limit >= floor
            row.checks["peak RSS ≤ 150 MiB"] = row.series[PYBUILD].peak_rss_mib <= 150
            row.limit = (f"export {export:.2f} s = {rate:.0f} MB/s = {rate / limit:.2f} × {name} ({limit:.0f} MB/s, "
                         f"median of the same rounds; {rate / start_limit:.2f} × the start-of-run "
                         f"{start_limit:.0f} MB/s)")
            for other, _ in libs[1:]:  # the deflate pybuild uses, on one thread: what both cores add
                if other_rate := _library_rate(row, f"{LIMIT}{other}", sample):
                    row.facts["export_fraction_of_same_library_1_thread"] = rate / other_rate
                    row.limit += f"; {rate / other_rate:.2f} × {other} ({other_rate:.0f} MB/s, same rounds)"
        rows.append(row)
    return rows


def _library_rate(row: Row, name: str, sample: bytes) -> float | None:
    """MB/s of the library series ``name`` of ``row`` (median pass over ``sample``), None if not measured."""
    series = row.series.get(name)
    return len(sample) / series.median / 1e6 if series is not None else None


def _library(sample: bytes, compress) -> Measure:
    """One pass of the library over ``sample`` in this process: wall seconds (no child, so no RSS)."""
    view = memoryview(sample)

    def once(_: int) -> Sample:
        started = time.perf_counter()
        compress(view)
        wall = time.perf_counter() - started
        return Sample(wall, 0)
    return once


def _export(tool: Tool, dockerfile: Path, context: Path, compression: str, tmp: Path):
    def once(_: int):
        tool.fresh()
        dest = tmp / f"oci-{tool.name}"
        shutil.rmtree(dest, ignore_errors=True)
        try:
            return tool.build_export(dockerfile, context, "big-run", compression, dest)
        finally:
            shutil.rmtree(dest, ignore_errors=True)
    return once


def stages_rows(bench: Bench) -> list[Row]:
    """(6) Two independent stages of a few seconds each, then a final stage copying from both: the stage
    work piped through busybox head (more than one core per stage), and hashing a file (one core)."""
    work = f"sha256 of {bench.sizes.stage_work_bytes >> 20} MiB"
    return [_stages_row(bench, "6-stages", f"head | {work}", single_core=False),
            _stages_row(bench, "6-stages-1core", f"dd to a file, then {work}: one core", single_core=True)]


def _stages_row(bench: Bench, key: str, work: str, *, single_core: bool) -> Row:
    sizes = bench.sizes
    dockerfile = stages_dockerfile(bench.tmp / f"Dockerfile.{key}", sizes, single_core=single_core)
    context = bench.tmp / "empty-context"
    context.mkdir(exist_ok=True)
    row = Row(key, f"two independent stages (sleep {sizes.stage_sleep:g} s + {work} each), --jobs 2",
              target="≤ 0.6 × --jobs 1")
    ready = [t for t in bench.tools if bench.prepare(row, t, t.fresh)]
    host = bench.tmp / f"host-{key}"
    contenders = [(f"{LIMIT}{how}", _host_stages(bench, host, single_core, how)) for how in HOST_STAGES]
    for tool in ready:
        contenders.append((tool.name, lambda _, t=tool: t.build(dockerfile, context, "stages", no_cache=True,
                                                                   jobs=2)))
        if tool.name == PYBUILD:
            contenders.append((f"{PYBUILD} --jobs 1", lambda _, t=tool: t.build(
                dockerfile, context, "stages", no_cache=True, jobs=1)))
    row = bench.alternate(row, contenders)
    serial = row.series.get(f"{PYBUILD} --jobs 1")
    if PYBUILD in row.series and serial is not None:
        ratio = row.series[PYBUILD].median / serial.median
        row.facts["jobs2_over_jobs1"] = ratio
        row.checks["≤ 0.6 × --jobs 1"] = ratio <= 0.6
        row.limit = f"--jobs 2 / --jobs 1 = {ratio:.2f} (--jobs 1 median {serial.median:.2f} s)"
        together, apart = (row.series.get(f"{LIMIT}{how}") for how in HOST_STAGES)
        if together is not None and apart is not None:
            bound = together.median / apart.median
            row.facts["host_together_over_apart"] = bound
            row.limit += (f"; the two RUN commands alone on the host, no builder: together {together.median:.2f} s"
                          f" / one after the other {apart.median:.2f} s = {bound:.2f}, the least any builder"
                          " can reach with this work")
    return row


HOST_STAGES = ("stage commands on the host, together", "stage commands on the host, one after the other")


def _host_stages(bench: Bench, work: Path, single_core: bool, how: str) -> Measure:
    """Both stages' RUN commands run by the image's busybox straight on the host, at once (``&``) or in turn:
    the best case of --jobs 2 and --jobs 1 without any builder in the way, measured in the same rounds."""
    links = work / "bin"
    links.mkdir(parents=True, exist_ok=True)
    busybox = bench.tools[0].busybox / "busybox"
    for applet in ("sh", "sleep", "head", "sha256sum", "dd", "rm"):
        if not (links / applet).exists():
            (links / applet).symlink_to(busybox)
    commands = [f"({stage_command(bench.sizes, name, single_core=single_core, root=str(work))})" for name in STAGES]
    script = " & ".join(commands) + " & wait" if how == HOST_STAGES[0] else " && ".join(commands)

    def once(_: int) -> Sample:
        started = time.perf_counter()
        done = subprocess.run([str(links / "sh"), "-c", script], env={"PATH": str(links)}, capture_output=True)
        wall = time.perf_counter() - started
        if done.returncode != 0 or not all((work / f"{name}.txt").exists() for name in STAGES):
            raise BenchError(f"stage commands on the host failed ({done.returncode}): {done.stderr.decode()[-300:]}")
        for name in STAGES:
            (work / f"{name}.txt").unlink()
        return Sample(wall, 0)
    return once
