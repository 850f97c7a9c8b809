"""`python -m bench --quick --no-peers --only 10`: scenario 10 measures a fresh runner with a registry cache and a
cold one, and counts what each downloaded in the registry's access log (timings are not asserted)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scenario_10_counts_the_cache_downloads(tmp_path):
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed")
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-peers", "--only", "10", "--out", str(out),
                           "--tmp", str(scratch)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["key"] == "10-remote-cache" and set(row["series"]) == {"pybuild", "pybuild cold"}, row
    facts = row["facts"]
    # the cache's manifest and config, and the app's 9 layers (the busybox base is on the fresh runner already)
    assert facts["pybuild: GET requests"] == 11 and facts["pybuild: bytes downloaded"] > 1000, facts
    assert facts["pybuild cold: GET requests"] == facts["pybuild cold: bytes downloaded"] == 0, facts
    assert not list(scratch.iterdir())  # the registry's storage went with the bench's temp directory
