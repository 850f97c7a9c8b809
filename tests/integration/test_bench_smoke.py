"""`python -m bench --quick --no-peers` end to end: every scenario produces positive figures, nothing leaks.

Timings are not asserted (they belong in bench/RESULTS.md, not in tests); this keeps the harness working.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIO_ROWS = ("1-cold", "2-cached", "3-one-file", "4-context-cold", "4-context-touched",
                 "4-context-unchanged", "4-context-export", "5-export-gzip", "5-export-zstd", "6-stages",
                 "6-stages-1core",
                 "7-network", "8-pull")


def _mounts_below(prefix: str) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(prefix)]


@pytest.mark.slow
def test_quick_bench_without_peers(tmp_path):
    if not (shutil.which("busybox") or Path("/bin/busybox").exists()):
        pytest.skip("busybox-static is not installed (scripts/setup.sh installs it)")
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-peers", "--out", str(out),
                           "--tmp", str(scratch)], cwd=REPO, capture_output=True, text=True, timeout=900)  # a guard against a hang
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert (out / "RESULTS.md").read_text().count("\n| ") >= len(SCENARIO_ROWS)

    rows = {row["key"]: row for row in results["rows"]}
    assert sorted(rows) == sorted(SCENARIO_ROWS)
    for key, row in rows.items():
        pybuild = row["series"].get("pybuild")
        assert pybuild is not None, f"{key}: pybuild missing: {row['missing']}"
        assert pybuild["median_s"] > 0 and pybuild["min_s"] > 0, key
        assert pybuild["peak_rss_mib"] > 0, key  # (7)
    assert set(results["peak_rss_mib"]["pybuild"]) == set(SCENARIO_ROWS)
    for key in ("6-stages", "6-stages-1core"):
        assert rows[key]["series"]["pybuild --jobs 1"]["median_s"] > 0, key
        assert rows[key]["facts"]["jobs2_over_jobs1"] > 0, key
        # the workload's own bound: both RUN commands on the host, together and one after the other, same rounds
        together, apart = (rows[key]["series"][f"limit: stage commands on the host, {how}"]
                           for how in ("together", "one after the other"))
        assert len(together["runs_s"]) == len(apart["runs_s"]) == len(rows[key]["series"]["pybuild"]["runs_s"])
        assert rows[key]["facts"]["host_together_over_apart"] == together["median_s"] / apart["median_s"] > 0, key
    # the phases that the limits are computed from were found in pybuild's rawjson events
    touched = rows["4-context-touched"]
    assert touched["facts"]["hash_MBps"] > 0
    # sha256 itself is measured in the same rounds as the builds, as the compressors are in scenario 5
    assert len(touched["series"]["limit: hashlib sha256"]["runs_s"]) == len(touched["series"]["pybuild"]["runs_s"])
    assert touched["facts"]["hash_fraction_of_sha256"] == touched["facts"]["hash_MBps"] / touched["facts"]["sha256_MBps"]
    assert rows["4-context-unchanged"]["facts"]["recheck_s"] > 0
    for kind in ("gzip", "zstd"):
        row = rows[f"5-export-{kind}"]
        assert row["facts"]["export_MBps"] > 0
        # the library's own throughput is measured in the same rounds as the builds (A B A B ...)
        library = [name for name in row["series"] if name.startswith("limit: ")]
        # gzip: the target's zlib, and zlib-ng (the deflate pybuild uses) on one thread
        assert len(library) == (2 if kind == "gzip" else 1), row["series"].keys()
        assert all(len(row["series"][n]["runs_s"]) == len(row["series"]["pybuild"]["runs_s"]) for n in library)
        assert row["facts"]["limit_MBps"] > 0
        assert row["facts"]["export_fraction_of_limit"] == row["facts"]["export_MBps"] / row["facts"]["limit_MBps"]
        assert ("export_fraction_of_same_library_1_thread" in row["facts"]) == (kind == "gzip")
    assert "limit: " not in "".join(results["peak_rss_mib"]), "a library measurement is not a tool"
    network = rows["7-network"]  # default (bridge) network vs --network none, in a namespace of its own
    assert network["series"]["pybuild --network none"]["median_s"] > 0 and "bridge cost per RUN (ms)" in network["facts"]
    assert all(v > 0 for v in results["limits"]["MBps"].values())
    assert results["meta"]["problems"] == []
    assert list(scratch.iterdir()) == [], "the bench left its temp directory behind"
    assert _mounts_below(str(scratch)) == []
