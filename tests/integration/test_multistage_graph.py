"""Issue 5 acceptance 1: --target prunes the graph, independent stages overlap, serial and parallel agree."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DOCKERFILE = """\
FROM pybuild/busybox AS base
RUN echo base > /base
FROM base AS builder-a
ARG RUNID
RUN --mount=type=cache,target=/ts,id=stamps-$RUNID cat /proc/uptime > /ts/a.start && sleep 1.5 \\
    && echo built-a > /a && cat /proc/uptime > /ts/a.end
FROM base AS builder-b
ARG RUNID
RUN --mount=type=cache,target=/ts,id=stamps-$RUNID cat /proc/uptime > /ts/b.start && sleep 1.5 \\
    && echo built-b > /b && cat /proc/uptime > /ts/b.end
FROM base AS final
COPY --from=builder-a /a /a
COPY --from=builder-b /b /b
CMD ["cat", "/base", "/a", "/b"]
"""


def stamps(root: Path, runid: str) -> dict[str, float]:
    """The timestamps the RUNs wrote into their cache mount (found through `cache ls`' id files)."""
    base = root / "cachemounts"
    for idfile in base.glob("*.id"):
        if idfile.read_text() == f"stamps-{runid}":
            d = base / idfile.stem
            return {p.name: float(p.read_text().split()[0]) for p in d.iterdir()}
    raise AssertionError(f"no cache mount stamps-{runid}: {sorted(os.listdir(base))}")


def steps(log: str) -> list[str]:
    return re.findall(r"^#\d+ \[([^\]]*?) \d+/\d+\]", log, re.M)


def test_target_builds_only_what_it_needs(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    proc = pybuild("--progress", "plain", "--target", "builder-a", "--build-arg", "RUNID=target", str(tmp_path))
    assert set(steps(proc.stderr.decode())) == {"base", "builder-a"}, proc.stderr.decode()


def test_independent_stages_overlap_and_match_the_serial_digest(pybuild, busybox_image, tmp_path, monkeypatch):
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # reproducible layers and history for the comparison
    parallel = pybuild("--progress", "plain", "--jobs", "2", "--build-arg", "RUNID=par", "-t", "ms/final",
                       str(tmp_path))
    t = stamps(pybuild.root, "par")
    assert t["a.start"] < t["b.end"] and t["b.start"] < t["a.end"], t  # the two RUNs overlapped in time
    serial = pybuild("--progress", "plain", "--jobs", "1", "--no-cache", "--build-arg", "RUNID=par",
                     "-t", "ms/serial", str(tmp_path))
    digest = lambda p: re.search(r"image id: (\S+)", p.stdout.decode()).group(1)  # noqa: E731
    assert digest(parallel) == digest(serial)
    assert pybuild("run", "ms/final").stdout.decode() == "base\nbuilt-a\nbuilt-b\n"
