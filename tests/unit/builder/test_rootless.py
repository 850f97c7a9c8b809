"""builder/rootless.py's pure parts: /etc/subuid parsing and the id maps handed to newuidmap."""
from __future__ import annotations

import os

import pytest

from builder import rootless
from builder.options import DEFAULT_ROOT, default_root
from builder.rootless import IdMap, id_maps, subordinate_ranges


def test_subordinate_ranges_by_name_or_id_skipping_bad_lines(tmp_path):
    path = tmp_path / "subuid"
    path.write_text("bob:100000:65536\nalice:200000:65536\n# comment\n1001:300000:10\nalice:x:5\nalice:1:0\n"
                    "alice:400000:1000\n")
    assert subordinate_ranges(str(path), "alice", 1001) == [(200000, 65536), (300000, 10), (400000, 1000)]
    assert subordinate_ranges(str(path), "carol", 1002) == []
    assert subordinate_ranges(str(tmp_path / "missing"), "alice", 1001) == []


def test_id_maps_put_the_user_at_zero_and_ranges_from_one():
    assert id_maps(1001, [(200000, 65536), (400000, 1000)]) == [
        IdMap(0, 1001, 1), IdMap(1, 200000, 65536), IdMap(65537, 400000, 1000)]
    assert id_maps(1001, []) == [IdMap(0, 1001, 1)]


def test_default_store_is_per_user_once_rootless(monkeypatch, tmp_path):
    monkeypatch.delenv("PYBUILD_ROOT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(rootless, "_entered", {"uid": 1001, "gid": 1001})
    assert default_root() == os.path.join(str(tmp_path), "pybuild")
    monkeypatch.setenv("PYBUILD_ROOT", "/elsewhere")
    assert default_root() == "/elsewhere"
    monkeypatch.delenv("PYBUILD_ROOT")
    monkeypatch.setattr(rootless, "_entered", {})
    assert default_root() == (DEFAULT_ROOT if os.geteuid() == 0 else os.path.join(str(tmp_path), "pybuild"))


@pytest.mark.skipif(os.geteuid() != 0, reason="root's path: run as root")
def test_enter_is_a_no_op_for_root():
    rootless.enter()
    assert not rootless.entered()
    assert open("/proc/self/uid_map").read().split() == ["0", "0", "4294967295"]
