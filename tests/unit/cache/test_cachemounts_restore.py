"""cache.cachemounts.restore: a mount from a remote cache is made privately and renamed into place only while no
build holds the mount and only if it does not exist, so a mount a concurrent build uses is never replaced."""
from __future__ import annotations

import pytest

from cache import cachemounts


def fill_with(text: str):
    def fill(tmp):
        (tmp / "restored.txt").write_text(text)
    return fill


def test_a_missing_mount_is_restored_with_its_id(tmp_path):
    name = cachemounts.name_for("/root/.cache/pip")
    assert cachemounts.restore(tmp_path, name, "/root/.cache/pip", fill_with("remote"))
    assert (tmp_path / "cachemounts" / name / "restored.txt").read_text() == "remote"
    assert (tmp_path / "cachemounts" / f"{name}.id").read_text() == "/root/.cache/pip"
    assert [m.id for m in cachemounts.listing(tmp_path)] == ["/root/.cache/pip"]


def test_a_mount_in_use_or_existing_is_never_replaced(tmp_path):
    name = cachemounts.name_for("deps")
    with cachemounts.hold(tmp_path, name):  # a concurrent RUN holds it (it makes the directory after the hold)
        assert not cachemounts.restore(tmp_path, name, "deps", fill_with("remote"))
        assert not (tmp_path / "cachemounts" / name).exists()
    (tmp_path / "cachemounts" / name).mkdir()
    (tmp_path / "cachemounts" / name / "own.txt").write_text("local")
    assert not cachemounts.restore(tmp_path, name, "deps", fill_with("remote"))
    assert sorted(p.name for p in (tmp_path / "cachemounts" / name).iterdir()) == ["own.txt"]


def test_a_failed_fill_leaves_nothing(tmp_path):
    name = cachemounts.name_for("deps")

    def fail(tmp):
        (tmp / "half").write_text("x")
        raise OSError("hostile tar")
    with pytest.raises(OSError):
        cachemounts.restore(tmp_path, name, "deps", fail)
    assert sorted(p.name for p in (tmp_path / "cachemounts").iterdir()) == [f"{name}.inuse"]
