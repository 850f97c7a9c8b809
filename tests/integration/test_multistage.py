"""Issue 5 acceptance 1, end to end through the CLI: base → {builder-a, builder-b} → final.

`--target builder-a` runs only base and builder-a; the full build runs the two builders at the same time (shown
twice: by clock readings the RUNs write into files the final image carries, read back with `pybuild run`, and by
the rawjson event times), and a parallel build gives the same image as a serial `--jobs 1 --no-cache` one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# CLOCK: busybox `date` has no %N; /proc/uptime has centiseconds, enough around a 1.5 s sleep. With
# CLOCK=/dev/null the same RUNs write empty stamp files, so the image no longer depends on when it was built.
DOCKERFILE = """\
FROM pybuild/busybox AS base
RUN echo base > /base
FROM base AS builder-a
ARG CLOCK=/proc/uptime
RUN mkdir /stamps && cat $CLOCK > /stamps/a.start && sleep 1.5 && echo built-a > /a && cat $CLOCK > /stamps/a.end
FROM base AS builder-b
ARG CLOCK=/proc/uptime
RUN mkdir /stamps && cat $CLOCK > /stamps/b.start && sleep 1.5 && echo built-b > /b && cat $CLOCK > /stamps/b.end
FROM base AS final
COPY --from=builder-a /a /stamps/ /out/
COPY --from=builder-b /b /stamps/ /out/
CMD ["cat", "/base", "/out/a", "/out/b"]
"""
STAMPS = ("a.start", "a.end", "b.start", "b.end")


def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    return tmp_path


def stages_in(plain_log: str) -> dict[str, list[str]]:
    """Stage name → the states its steps reached (`DONE`, `CACHED`, `ERROR`), from a plain progress log.

    FROM steps are left out: importing a base is DONE the first time in a store and CACHED afterwards."""
    titles = dict(re.findall(r"^#(\d+) \[(\S+) \d+/\d+\] (?!FROM )", plain_log, re.M))
    states: dict[str, list[str]] = {stage: [] for stage in titles.values()}
    for number, state in re.findall(r"^#(\d+) (DONE|CACHED|ERROR)\b", plain_log, re.M):
        if number in titles:
            states[titles[number]].append(state)
    return states


def intervals(rawjson_log: str) -> dict[str, tuple[float, float]]:
    """Step title → (start, end) wall-clock times from rawjson events."""
    started: dict[int, tuple[str, float]] = {}
    spans = {}
    for line in rawjson_log.splitlines():
        event = json.loads(line)
        if event["type"] == "StepStarted":
            started[event["number"]] = (event["title"], event["ts"])
        elif event["type"] in ("StepDone", "StepCached", "StepFailed"):
            title, start = started[event["number"]]
            spans[title] = (start, event["ts"])
    return spans


def run_step(spans: dict[str, tuple[float, float]], stage: str) -> tuple[float, float]:
    (span,) = [s for title, s in spans.items() if title.startswith(f"[{stage} ") and "] RUN " in title]
    return span


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def image_id(proc) -> str:
    return re.search(r"^image id: (sha256:[0-9a-f]{64})$", proc.stdout.decode(), re.M).group(1)


def test_target_runs_only_the_stages_it_needs(pybuild, busybox_image, tmp_path):
    proc = pybuild("--progress", "plain", "--no-cache", "--target", "builder-a", str(context(tmp_path)))
    log = proc.stderr.decode()
    assert stages_in(log) == {"base": ["DONE"], "builder-a": ["DONE"]}, log
    assert "builder-b" not in log and "final" not in log, log


def test_builders_run_at_the_same_time(pybuild, busybox_image, tmp_path):
    pybuild("--progress", "plain", "--no-cache", "--jobs", "4", "-t", "ms/stamped", str(context(tmp_path)))
    shown = pybuild("run", "ms/stamped", "sh", "-c", "for f in " + " ".join(f"/out/{s}" for s in STAMPS)
                    + "; do head -c 32 $f | cut -d' ' -f1; done").stdout.decode().split()
    t = dict(zip(STAMPS, map(float, shown)))
    assert len(t) == 4 and t["a.start"] < t["a.end"] and t["b.start"] < t["b.end"], shown
    assert overlap((t["a.start"], t["a.end"]), (t["b.start"], t["b.end"])), t
    assert pybuild("run", "ms/stamped").stdout.decode() == "base\nbuilt-a\nbuilt-b\n"


def test_parallel_and_serial_builds_give_the_same_image(pybuild, busybox_image, tmp_path, monkeypatch):
    ctx = context(tmp_path)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # created times in config and history
    args = ("--progress", "rawjson", "--no-cache", "--build-arg", "CLOCK=/dev/null", str(ctx))
    parallel = pybuild("--jobs", "4", *args)
    spans = intervals(parallel.stderr.decode())
    assert overlap(run_step(spans, "builder-a"), run_step(spans, "builder-b")), spans
    serial = pybuild("--jobs", "1", *args)
    ordered = sorted(intervals(serial.stderr.decode()).values())
    assert all(one[1] <= two[0] for one, two in zip(ordered, ordered[1:])), ordered  # really one at a time
    assert len(ordered) == len(spans) == 6
    assert image_id(parallel) == image_id(serial)
    manifest = re.compile(r"^manifest: (\S+)$", re.M)
    assert manifest.search(parallel.stdout.decode()).group(1) == manifest.search(serial.stdout.decode()).group(1)


def test_copy_from_an_image_copies_out_of_its_root_and_is_cached(pybuild, busybox_image, tmp_path):
    """BuildKit: a --from that names no stage is an image reference (here a local one)."""
    ctx = tmp_path / "from-image"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY --from={busybox_image} /bin/busybox /copied\n"
                                    "RUN cmp /bin/busybox /copied && echo same > /result\n")
    first = pybuild("--progress", "plain", "-t", "ms/from-image", str(ctx))
    assert f"FROM {busybox_image}" in first.stderr.decode()
    assert pybuild("run", "ms/from-image", "cat", "/result").stdout == b"same\n"
    again = pybuild("--progress", "plain", "-t", "ms/from-image", str(ctx))
    assert image_id(again) == image_id(first)
    assert stages_in(again.stderr.decode()) == {"stage-0": ["CACHED", "CACHED"]}, again.stderr.decode()


def test_copy_from_an_unreachable_image_is_one_error_naming_the_line(pybuild, busybox_image, tmp_path):
    ctx = tmp_path / "from-missing"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY --from=127.0.0.1:9/none:1 /x /x\n")
    proc = pybuild(str(ctx), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert "Dockerfile:2:1: COPY --from=127.0.0.1:9/none:1:" in err and "127.0.0.1:9" in err
