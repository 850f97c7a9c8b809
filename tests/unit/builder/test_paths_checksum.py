"""Scoped path resolution and content checksums (no root needed)."""
from __future__ import annotations

import os

from builder.context.checksum import checksum_sources
from builder.context.paths import clean, expand_glob, scoped_join


def test_clean_never_leaves_the_root():
    assert clean("../../etc/passwd") == "etc/passwd"
    assert clean("/a/./b/../c/") == "a/c"
    assert clean("..") == ""


def test_scoped_join_follows_symlinks_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib", root / "lib")
    os.symlink("../../../../../etc", root / "up")
    os.symlink("/etc/shadow", root / "shadow")
    assert scoped_join(str(root), "lib/x") == str(root / "usr/lib/x")
    assert scoped_join(str(root), "up/passwd") == str(root / "etc/passwd")
    assert scoped_join(str(root), "shadow") == str(root / "etc/shadow")
    assert scoped_join(str(root), "shadow", follow_last=False) == str(root / "shadow")


def test_scoped_join_symlink_loop_is_an_error(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    try:
        scoped_join(str(tmp_path), "a/x")
    except OSError as exc:
        assert "symbolic links" in str(exc)
    else:
        raise AssertionError("a symlink loop must fail")


def test_expand_glob_matches_per_component(tmp_path):
    (tmp_path / "config").mkdir()
    for name in ("a.conf", "b.conf", "notes.txt"):
        (tmp_path / "config" / name).write_text(name)
    assert expand_glob(str(tmp_path), "config/*.conf") == ["config/a.conf", "config/b.conf"]
    assert expand_glob(str(tmp_path), "*/*.txt") == ["config/notes.txt"]
    assert expand_glob(str(tmp_path), "missing/*") == []


def test_checksum_ignores_mtime_but_not_mode_or_content(tmp_path):
    f = tmp_path / "src" / "file"
    f.parent.mkdir()
    f.write_text("one")
    first = checksum_sources(str(tmp_path), ["src"])
    os.utime(f, (1, 1))
    assert checksum_sources(str(tmp_path), ["src"]) == first
    os.chmod(f, 0o700)
    chmod = checksum_sources(str(tmp_path), ["src"])
    assert chmod != first
    f.write_text("two")
    assert checksum_sources(str(tmp_path), ["src"]) not in (first, chmod)


def test_checksum_respects_exclusions_and_reports_missing(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("k")
    (tmp_path / "d" / "skip").write_text("s")
    excluded = lambda rel: rel == "d/skip"  # noqa: E731
    before = checksum_sources(str(tmp_path), ["d"], excluded)
    (tmp_path / "d" / "skip").write_text("changed")
    assert checksum_sources(str(tmp_path), ["d"], excluded) == before
    assert checksum_sources(str(tmp_path), ["nope"]) == {"nope": None}
