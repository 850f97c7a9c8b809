"""cache/cachemounts.py against planted links: prune never removes or creates anything outside the store."""
from __future__ import annotations

from cache import cachemounts


def test_a_symlinked_cachemounts_directory_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    (victim / "important").mkdir(parents=True)
    (victim / "important" / "file").write_text("keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / "cachemounts").symlink_to(victim)
    assert cachemounts.listing(root) == []
    assert cachemounts.prune(root) == (0, 0)
    assert (victim / "important" / "file").read_text() == "keep" and sorted(p.name for p in victim.iterdir()) == [
        "important"]


def test_a_link_inside_is_no_mount_and_an_inuse_link_is_not_followed(tmp_path):
    root = tmp_path / "root"
    base = root / "cachemounts"
    (base / "real").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (base / "planted").symlink_to(tmp_path / "outside")
    (base / "real.inuse").symlink_to(tmp_path / "created-outside")
    assert [m.name for m in cachemounts.listing(root)] == ["real"]
    try:
        cachemounts.prune(root)
    except OSError:
        pass  # refusing the planted lock file is fine; following it is not
    assert not (tmp_path / "created-outside").exists() and (tmp_path / "outside").is_dir()
