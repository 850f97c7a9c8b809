"""The COPY helper's contract (builder/ops/fileop.py run_copy/resolve_owner) on plain directories, without a
build: --chown by name and number against the destination's /etc/passwd and /etc/group, trailing slashes, globs,
dangling links, the ownership and modes of created and copied directories. Ownership checks need root (chown)."""
from __future__ import annotations

import os
import stat

import pytest

from builder.ops.copysel import FileOpError
from builder.ops.fileop import resolve_owner, run_copy

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other owners needs root")
PASSWD = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1001:1002::/home/app:/bin/sh\nbad:x:zz:1:::\n"
GROUP = "root:x:0:\nstaff:x:50:app\napp:x:1002:\n"


@pytest.fixture
def dest(tmp_path):
    root = tmp_path / "dest"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub").chmod(0o750)
    (root / "dir" / "f.txt").write_text("f")
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")
    (root / "c.md").write_text("c")
    os.symlink("nowhere", root / "dangling")
    os.symlink("../nowhere", root / "dir" / "dangling")
    return root


def copy(src, dest, sources, target, **op):
    run_copy({"op": "copy", "sources": sources, "dest": target, "kind": "context", **op}, str(dest), str(src))


@pytest.mark.parametrize("spec, expected", [
    ("app", (1001, 1002)), ("app:staff", (1001, 50)), ("1001", (1001, 1001)), ("7:8", (7, 8)),
    ("app:9", (1001, 9)), ("", (0, 0)), ("0:staff", (0, 50)),
])
def test_chown_names_and_numbers(dest, spec, expected):
    owner = resolve_owner(str(dest), spec)
    assert (owner.uid, owner.gid) == expected


@pytest.mark.parametrize("spec, message, lenient", [
    ("nobody", "can't find uid for user nobody", (0, 0)),
    ("app:nogroup", "can't find gid for group nogroup", (1001, 1002)),  # the user's own group then
    ("bad", "can't find uid for user bad", (0, 0)),  # a line with a non-numeric uid is no user
])
def test_unknown_names_are_errors_when_strict(dest, spec, message, lenient):
    with pytest.raises(FileOpError, match=message):
        resolve_owner(str(dest), spec)
    owner = resolve_owner(str(dest), spec, strict=False)  # WORKDIR / USER's owner: unknown counts as 0
    assert (owner.uid, owner.gid) == lenient


def test_passwd_is_read_inside_the_root(tmp_path, dest):
    """/etc in the destination is a symlink to the host's /etc: it is resolved inside the root, not followed."""
    (dest / "etc" / "passwd").unlink()
    (dest / "etc" / "group").unlink()
    (dest / "etc").rmdir()
    os.symlink("/etc", dest / "etc")
    with pytest.raises(FileOpError):
        resolve_owner(str(dest), "root")


def test_trailing_slash_makes_a_directory(src, dest):
    copy(src, dest, ["a.txt"], "/x/")
    copy(src, dest, ["a.txt"], "/y")
    assert (dest / "x" / "a.txt").read_text() == "a"
    assert (dest / "y").is_file() and (dest / "y").read_text() == "a"


def test_existing_directory_takes_the_file_inside(src, dest):
    (dest / "d").mkdir()
    copy(src, dest, ["a.txt"], "/d")
    assert (dest / "d" / "a.txt").is_file()


def test_glob_sources_need_a_directory_destination(src, dest):
    copy(src, dest, ["*.txt"], "/g/")
    assert sorted(os.listdir(dest / "g")) == ["a.txt", "b.txt"]
    with pytest.raises(FileOpError, match="must be a directory and end with a /"):
        copy(src, dest, ["*.txt"], "/h")


def test_a_glob_matching_one_file_copies_it_as_named(src, dest):
    copy(src, dest, ["*.md"], "/readme")
    assert (dest / "readme").read_text() == "c"


def test_dangling_links_inside_a_directory_are_copied_as_links(src, dest):
    copy(src, dest, ["dir"], "/l/")
    link = dest / "l" / "dangling"
    assert link.is_symlink() and os.readlink(link) == "../nowhere" and not link.exists()


def test_a_dangling_link_named_as_the_source_is_not_found(src, dest):
    """As BuildKit (FollowSymlinks on COPY sources): the named source is followed, and leads nowhere."""
    with pytest.raises(FileOpError, match="source 'dangling' not found"):
        copy(src, dest, ["dangling"], "/l/")


def test_directory_contents_merge_and_keep_modes(src, dest):
    copy(src, dest, ["dir"], "/app")
    assert sorted(os.listdir(dest / "app")) == ["dangling", "f.txt", "sub"]
    assert stat.S_IMODE((dest / "app").stat().st_mode) == 0o755  # the top is made like a created parent
    assert stat.S_IMODE((dest / "app" / "sub").stat().st_mode) == 0o750  # below it: the source's mode


@needs_root
def test_chown_applies_to_files_and_created_directories(src, dest):
    copy(src, dest, ["dir"], "/deep/app", chown="app:staff")
    for path in (dest / "deep", dest / "deep" / "app", dest / "deep" / "app" / "sub",
                 dest / "deep" / "app" / "f.txt"):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (1001, 50), path


@needs_root
def test_without_chown_context_files_are_root_owned(src, dest):
    os.chown(src / "a.txt", 1234, 5678)
    copy(src, dest, ["a.txt"], "/a")
    st = (dest / "a").lstat()
    assert (st.st_uid, st.st_gid) == (0, 0)


@needs_root
def test_copy_from_a_stage_keeps_the_source_owner(src, dest):
    os.chown(src / "a.txt", 1234, 5678)
    run_copy({"op": "copy", "sources": ["a.txt"], "dest": "/a", "kind": "stage"}, str(dest), str(src))
    st = (dest / "a").lstat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_exclude_and_parents(src, dest):
    copy(src, dest, ["."], "/e/", excludes=["*.txt"])
    assert sorted(os.listdir(dest / "e")) == ["c.md", "dangling", "dir"]
    assert sorted(os.listdir(dest / "e" / "dir")) == ["dangling", "f.txt", "sub"]  # `*` stays in one directory
    copy(src, dest, ["dir/sub"], "/p/", parents=True)
    assert (dest / "p" / "dir" / "sub").is_dir()
