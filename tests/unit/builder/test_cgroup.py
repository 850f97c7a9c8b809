"""Where a RUN's cgroup goes (v1 per controller, or v2), docker's size syntax: parsing, on synthetic inputs."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.sandbox.cgroup import PARENT, CgroupError, find_hierarchy, parse_size

HYBRID_CGROUP = "9:name=systemd:/\n8:pids:/\n4:memory:/jobs/42\n1:cpu:/\n3:cpuset:/\n0::/\n"
HYBRID_MOUNTS = """\
30 25 0:26 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 25 0:29 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
34 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_a_hybrid_host_uses_v1_below_the_builders_own_cgroup_of_each_controller():
    found = find_hierarchy(HYBRID_CGROUP, HYBRID_MOUNTS)
    assert found.version == 1
    assert found.bases == {"pids": f"/sys/fs/cgroup/pids/{PARENT}",
                           "memory": f"/sys/fs/cgroup/memory/jobs/42/{PARENT}",
                           "cpu": f"/sys/fs/cgroup/cpu/{PARENT}", "cpuset": f"/sys/fs/cgroup/cpuset/{PARENT}"}


def test_a_v1_mount_of_a_sub_tree_maps_the_cgroup_path_into_it():
    mounts = "30 25 0:26 /outer /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    assert find_hierarchy("8:pids:/outer/inner\n", mounts).bases["pids"] == f"/sys/fs/cgroup/pids/inner/{PARENT}"


def v2_tree(tmp_path: Path, own: str, controllers: str = "cpuset cpu io memory pids") -> str:
    root = tmp_path / "cgroup"
    for directory in (root, root / own.strip("/")):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.controllers").write_text(controllers + "\n")
        (directory / "cgroup.subtree_control").write_text("")
    return f"40 25 0:31 / {root} rw,relatime - cgroup2 cgroup2 rw\n"


def test_a_unified_host_uses_v2_below_the_builders_cgroup(tmp_path):
    mounts = v2_tree(tmp_path, "/user.slice/session-1.scope")
    found = find_hierarchy("0::/user.slice/session-1.scope\n", mounts)
    assert found.version == 2
    own = tmp_path / "cgroup" / "user.slice" / "session-1.scope"
    assert found.bases == {"": str(own / PARENT)}
    assert (own / "cgroup.subtree_control").read_text() == "+pids +memory +cpu +cpuset"


def test_v2_goes_beside_the_builders_cgroup_when_it_cannot_hand_controllers_down(tmp_path):
    mounts = v2_tree(tmp_path, "/busy")
    (tmp_path / "cgroup" / "busy" / "cgroup.subtree_control").unlink()
    (tmp_path / "cgroup" / "busy" / "cgroup.subtree_control").mkdir()  # writing it fails, as EBUSY would
    assert find_hierarchy("0::/busy\n", mounts).bases == {"": str(tmp_path / "cgroup" / PARENT)}


def test_no_pids_controller_anywhere_is_an_error(tmp_path):
    mounts = v2_tree(tmp_path, "/", controllers="hugetlb")
    with pytest.raises(CgroupError, match="pids controller"):
        find_hierarchy("0::/\n", mounts)


@pytest.mark.parametrize("text, size", [("1024", 1024), ("512m", 512 << 20), ("2g", 2 << 30), ("1.5k", 1536),
                                        ("64M", 64 << 20), ("10b", 10)])
def test_sizes_read_as_docker_reads_them(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-5m", "0", "1x", "nan", "inf", "1e30g", "4e18g"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)
