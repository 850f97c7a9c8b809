"""Issue 25: RUN cache mounts are store state: `cache du` counts them, `cache prune --all` (or --filter
type=cachemount) removes them — but never one a running build holds — and prune says what it removed in words."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import REPO, Pybuild, _with_root

pytestmark = pytest.mark.slow


def _fill(pybuild: Pybuild, ctx, cache_id: str, command: str) -> None:
    (ctx / "Dockerfile").write_text(f"FROM pybuild/busybox\nRUN --mount=type=cache,target=/c,id={cache_id} {command}\n")
    pybuild("--no-cache", str(ctx))


def test_du_counts_cache_mounts_and_prune_all_removes_them(pybuild, busybox_image, tmp_path):
    cache_id = f"prune-{tmp_path.name}"
    _fill(pybuild, tmp_path, cache_id, "head -c 300000 /dev/urandom > /c/blob")
    usage = json.loads(pybuild("cache", "du", "--format", "json").stdout)
    assert usage["cache_mounts"] >= 1 and usage["cache_mount_bytes"] >= 300000
    rows = json.loads(pybuild("cache", "ls", "--format", "json").stdout)
    assert any(r.get("type") == "cache-mount" and r["instruction"] == f"cache mount id={cache_id}" for r in rows)
    out = pybuild("cache", "prune", "--filter", "type=cachemount").stdout.decode()
    assert "Removed: 0 cache records" in out and "cache mount" in out and "Total reclaimed space:" in out, out
    assert not [d for d in (pybuild.root / "cachemounts").iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert json.loads(pybuild("cache", "du", "--format", "json").stdout)["cache_mounts"] == 0


def test_prune_never_removes_a_cache_mount_in_use(busybox_image, tmp_path, pybuild):
    root = tmp_path / "store"
    own = Pybuild(root)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    own("-t", "pybuild/busybox", str(REPO / "testdata" / "busybox"))
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\n"
                                    "RUN --mount=type=cache,target=/c,id=busy echo x > /c/f && sleep 8 && cat /c/f\n")
    build = subprocess.Popen([sys.executable, "-m", "builder", *_with_root(["--progress", "plain", str(ctx)], root)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # a guard, not a timing: wait until the RUN has written its file
        while not any((root / "cachemounts").glob("*/f")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any((root / "cachemounts").glob("*/f"))
        result = json.loads(own("cache", "prune", "--all", "--format", "json").stdout)
        assert result["cache_mounts"] == 0
        out = build.communicate(timeout=300)[0].decode()
        assert build.returncode == 0, out
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert json.loads(own("cache", "prune", "--all", "--format", "json").stdout)["cache_mounts"] == 1
