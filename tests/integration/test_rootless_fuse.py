"""Rootless builds with --snapshotter fuse-overlayfs (issue 22): the layers equal a root build's, whiteouts too,
and no daemon or mount is left.

/dev/fuse here is 0600 root (a container; Debian's default is 0666), so the user's pybuild runs in a private mount
namespace of the test's own with a fresh node open to all over it (rootless_users.PRIVATE_DEV).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.integration.conftest import TESTDATA
from tests.integration.rootless_users import (_diff_ids, _last_layer, _root_pybuild, ranged,  # noqa: F401
                                              users)

pytestmark = pytest.mark.slow
FUSE = ("--snapshotter", "fuse-overlayfs")


def _fuse_mounts(*scopes: Path) -> list[str]:
    """Host mounts of fuse-overlayfs, or naming one of `scopes`: what a leaked daemon would leave."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if "fuse-overlayfs" in line or any(str(scope) in line for scope in scopes):
            found.append(" ".join(line.split()[3:]))
    return sorted(found)


@pytest.fixture
def fuse_tool():
    return require_tool("fuse-overlayfs")


def test_forced_fuse_overlayfs_app_layers_equal_roots(ranged, fuse_tool, tmp_path):
    app = str(TESTDATA / "app")
    before = _fuse_mounts(ranged.home)
    layout = ranged.home / "fuse-app-oci"
    proc = ranged.pybuild(*FUSE, "build", "--no-cache", "-f", f"{app}/Dockerfile", "-t", "me/app:v1", "--output",
                          f"type=oci,dest={layout}", app, devices=("fuse",))
    err = proc.stderr.decode()
    assert err.count("notice: rootless mode: layers are mounted with fuse-overlayfs") == 1, err
    root_store, root_layout, ctx = tmp_path / "root-store", tmp_path / "root-oci", tmp_path / "bb"
    shutil.copytree(ranged.home / "busybox-ctx", ctx)
    _root_pybuild(root_store, "build", "-t", "pybuild/busybox", str(ctx))
    _root_pybuild(root_store, "build", "-f", f"{app}/Dockerfile", "-t", "me/app:v1", "--output",
                  f"type=oci,dest={root_layout}", app)
    assert _diff_ids(layout) == _diff_ids(root_layout)  # byte-identical layer tars (SOURCE_DATE_EPOCH set)
    assert not ranged.leftovers()  # no fuse-overlayfs daemon (it runs as the user) or anything else
    assert _fuse_mounts(ranged.home) == before


def test_forced_fuse_overlayfs_whiteouts_equal_roots(ranged, fuse_tool, tmp_path):
    ctx = ranged.home / "fuse-wh-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\n"
                                    "RUN rm /bin/ls && rm -r /home/app && rm -r /usr/local/bin && mkdir /usr/local/bin "
                                    "&& echo x > /usr/local/bin/new\n")
    layout = ranged.home / "fuse-wh-oci"
    ranged.pybuild(*FUSE, "build", "--no-cache", "--output", f"type=oci,dest={layout}", str(ctx), devices=("fuse",))
    names = sorted(m.name for m in _last_layer(layout))
    assert names == ["bin", "bin/.wh.ls", "home", "home/.wh.app", "usr", "usr/local", "usr/local/bin",
                     "usr/local/bin/.wh..wh..opq", "usr/local/bin/new"], names
    root_store, root_layout, bctx = tmp_path / "root-store", tmp_path / "root-oci", tmp_path / "bb"
    shutil.copytree(ranged.home / "busybox-ctx", bctx)
    _root_pybuild(root_store, "build", "-t", "pybuild/busybox", str(bctx))
    _root_pybuild(root_store, "build", "--output", f"type=oci,dest={root_layout}", str(ctx))
    assert _diff_ids(layout) == _diff_ids(root_layout)
    assert not ranged.leftovers()


def test_fuse_overlayfs_without_the_device_is_one_clear_error(ranged, fuse_tool):
    """Without a /dev/fuse the user may open (this machine's 0600 node), the RUN fails with fuse-overlayfs' reason."""
    ctx = ranged.home / "fuse-nodev-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo hi > /f\n")
    proc = ranged.pybuild(*FUSE, "build", "--no-cache", str(ctx), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "fuse-overlayfs failed" in err and "Traceback" not in err, err
    assert not ranged.leftovers()
