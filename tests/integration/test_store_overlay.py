"""The store against a real overlayfs: commit an upperdir the kernel wrote, stack snapshots.

Needs root and overlayfs (tests/conftest.py skips integration tests otherwise).
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from cache import Store

from tests.unit.cache.helpers import commit_tree, tar_bytes, tar_entries

BASE = [("file", "etc/motd", b"hello"), ("file", "etc/keep", b"keep"),
        ("file", "var/lib/data/a", b"a"), ("file", "var/lib/data/b", b"b"),
        ("file", "bin/tool", b"tool", 0o755)]


@contextmanager
def overlay(target: Path, lowerdirs: list, upper: Path | None = None, work: Path | None = None,
            cwd: Path | None = None):
    opts = "lowerdir=" + ":".join(map(str, lowerdirs))
    if upper is not None:
        opts += f",upperdir={upper},workdir={work},redirect_dir=off,metacopy=off,index=off"
    target.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)], check=True, cwd=cwd)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def change(merged: Path) -> None:
    (merged / "etc" / "motd").unlink()
    subprocess.run(["rm", "-rf", str(merged / "var" / "lib" / "data")], check=True)
    (merged / "var" / "lib" / "data").mkdir()
    (merged / "var" / "lib" / "data" / "c").write_bytes(b"c")
    (merged / "etc" / "new").write_bytes(b"new")
    os.link(merged / "etc" / "new", merged / "etc" / "new2")
    os.chmod(merged / "etc" / "keep", 0o600)


def view(root: Path) -> dict[str, bytes | None]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() else None
    return out


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


def test_kernel_upperdir_becomes_an_oci_layer_and_stacks(store, tmp_path):
    base, base_layer = commit_tree(store, BASE)
    m = store.prepare(base)
    with overlay(tmp_path / "merged", m.lowerdirs, m.upper, m.work) as merged:
        change(merged)
        expected_view = view(merged)
    top, layer = store.commit(m)
    names = [e[0] for e in tar_entries(tar_bytes(store, layer.blob.digest))]
    assert names == ["etc/", "etc/.wh.motd", "etc/keep", "etc/new", "etc/new2", "var/", "var/lib/",
                     "var/lib/data/", "var/lib/data/.wh..wh..opq", "var/lib/data/c"]
    assert "var/lib/data/a" not in expected_view and expected_view["etc/new"] == b"new"

    with overlay(tmp_path / "ro", store.lowerdirs(top)) as ro:  # committed chain, read-only
        assert view(ro) == expected_view

    with Store.open(tmp_path / "fresh") as fresh:  # the layers alone rebuild the same view
        snap = None
        for lyr in (base_layer, layer):
            with store.open_blob(lyr.blob.digest) as f:
                fresh.put_blob_file(f)
            snap = fresh.import_layer(snap, lyr.blob)
        assert snap.diff_id == layer.diff_id
        with overlay(tmp_path / "ro2", fresh.lowerdirs(snap)) as ro:
            assert view(ro) == expected_view


def test_many_lowerdirs_fit_in_the_mount_options(store, tmp_path):
    snap = None
    for i in range(120):
        snap, _ = commit_tree(store, [("file", f"layer{i}", str(i).encode())], parent=snap)
    base, lowers = store.relative_lowerdirs(snap)
    assert len(lowers) == 120 and lowers[0] == f"{snap.id}/fs"
    with overlay(tmp_path / "ro", lowers, cwd=base) as ro:
        assert len(os.listdir(ro)) == 120
    m = store.prepare(None)  # scratch: the empty dir under a writable upper
    base, lowers = store.relative_lowerdirs(None)
    assert m.lowerdirs == [base / lowers[0]] == [store.empty_dir()]
    with overlay(tmp_path / "scratch", lowers, m.upper, m.work, cwd=base) as merged:
        assert os.listdir(merged) == []
        (merged / "f").write_text("x")
    assert store.commit(m)[1] is not None
