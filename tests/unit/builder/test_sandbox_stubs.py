"""Container paths resolved inside a root, and mount-point stubs that leave no trace (no root needed)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.sandbox.securejoin import scoped_join as resolve_in_root
from builder.sandbox.stubs import Stub, ensure_path, prune_noop_copy_ups, remove_stubs, remove_stubs_in_upper


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    os.symlink("/usr/lib", tmp_path / "lib")  # absolute: must restart at the root, not the host's /
    os.symlink("../../..", tmp_path / "usr" / "up")  # climbs above the root: clamped
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    return tmp_path


@pytest.mark.parametrize("path, expected", [
    ("/etc/hosts", "etc/hosts"),
    ("/lib/x", "usr/lib/x"),
    ("/usr/up/etc", "etc"),
    ("/../../etc", "etc"),
    ("/etc/./../usr//lib", "usr/lib"),
    ("/missing/deeper", "missing/deeper"),
    ("/", ""),
])
def test_resolve_in_root(root, path, expected):
    assert resolve_in_root(str(root), path) == os.path.join(str(root), expected) if expected else str(root)


def test_symlink_loops_are_an_error(root):
    with pytest.raises(OSError, match="too many levels of symbolic links"):
        resolve_in_root(str(root), "/loop1/x")


def test_existing_paths_make_no_stub(root):
    host, stub = ensure_path(str(root), "/etc", directory=True)
    assert (host, stub) == (str(root / "etc"), None)


@pytest.fixture(params=["in the container", "in the upper"])
def remove(request, tmp_path):
    """remove_stubs as PID 1 runs it, or remove_stubs_in_upper as the runner does (the stubs sent as JSON; what
    goes is moved into a trash directory beside the root)."""
    if request.param == "in the container":
        return remove_stubs
    trash = tmp_path.parent / (tmp_path.name + "-trash")
    trash.mkdir()

    def in_upper(root: str, stubs: list) -> list[str]:
        return remove_stubs_in_upper(root, str(trash), [Stub.from_json(json.loads(json.dumps(s.to_json())))
                                                        for s in stubs])
    return in_upper


def test_stubs_are_created_and_removed_with_parent_times_restored(root, remove):
    etc = root / "etc"
    os.utime(etc, ns=(1_000_000_000, 2_000_000_000))
    stubs = []
    for path, directory in (("/etc/hosts", False), ("/etc/resolv.conf", False), ("/a/b/c", True)):
        host, stub = ensure_path(str(root), path, directory=directory)
        assert os.path.lexists(host) and stub is not None
        stubs.append(stub)
    assert stubs[2].created == ("/a", "/a/b", "/a/b/c") and stubs[2].parent == "/"
    restored = remove(str(root), stubs)
    assert not (root / "etc" / "hosts").exists() and not (root / "a").exists()
    assert etc.stat().st_mtime_ns == 2_000_000_000
    assert sorted(restored) == ["/", "/etc", "/etc"]


def test_stubs_the_command_used_are_kept(root, remove):
    _, file_stub = ensure_path(str(root), "/etc/hosts", directory=False)
    _, dir_stub = ensure_path(str(root), "/data/mnt", directory=True)
    (root / "etc" / "hosts").write_text("written by the command\n")
    (root / "data" / "mnt" / "file").write_text("x")
    assert remove(str(root), [file_stub, dir_stub]) == []
    assert (root / "etc" / "hosts").read_text() == "written by the command\n"
    assert (root / "data" / "mnt" / "file").exists()


def test_parent_touched_by_the_command_keeps_its_new_time(root, remove):
    os.utime(root / "etc", ns=(5, 5))
    _, stub = ensure_path(str(root), "/etc/hosts", directory=False)
    os.utime(root / "etc", ns=(7, 7))  # the command changed /etc meanwhile
    assert remove(str(root), [stub]) == []
    assert not (root / "etc" / "hosts").exists()
    assert (root / "etc").stat().st_mtime_ns != 5


def test_a_stub_in_a_chain_the_command_wrote_beside_goes_alone(root, remove):
    _, stub = ensure_path(str(root), "/a/b", directory=True)
    (root / "a" / "other").write_text("x")
    assert remove(str(root), [stub]) == []
    assert sorted(os.listdir(root / "a")) == ["other"]


def test_the_upper_is_walked_without_following_what_the_command_made(root, tmp_path_factory):
    """The runner reads a directory the RUN wrote: a parent replaced by a symlink stops that stub, and nothing
    it points to is touched."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "hosts").write_text("")
    os.utime(outside, ns=(3, 3))
    _, stub = ensure_path(str(root), "/etc/hosts", directory=False)
    (root / "etc" / "hosts").unlink()
    (root / "etc").rmdir()
    os.symlink(str(outside), root / "etc")
    trash = tmp_path_factory.mktemp("trash")
    assert remove_stubs_in_upper(str(root), str(trash), [stub]) == []
    assert (outside / "hosts").exists() and outside.stat().st_mtime_ns == 3 and os.listdir(trash) == []


def test_stub_follows_symlinks_inside_the_root(root):
    host, stub = ensure_path(str(root), "/lib/mountpoint", directory=True)
    assert host == str(root / "usr" / "lib" / "mountpoint")
    assert stub.created == ("/usr/lib/mountpoint",)


@pytest.mark.parametrize("trash", [False, True])
def test_prune_noop_copy_ups(tmp_path, trash):
    """With a trash directory (the runner's) what goes is moved there; the upper ends the same."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    bin_dir = tmp_path / "trash"
    bin_dir.mkdir()
    for base in (lower, upper):
        (base / "etc" / "ssl").mkdir(parents=True)
        (base / "var").mkdir()
        (base / "opt").mkdir()
    (upper / "var" / "new").write_text("x")  # not empty: a real change
    os.chmod(upper / "opt", 0o700)  # metadata differs from the lower copy: a real change
    for path in ("etc/ssl", "etc", "var", "opt"):
        times = os.stat(lower / path)
        os.utime(upper / path, ns=(times.st_atime_ns, times.st_mtime_ns))
    prune_noop_copy_ups(str(upper), (str(lower),), ["/etc", "/etc/ssl", "/var", "/opt", "/absent"],
                        str(bin_dir) if trash else None)
    assert sorted(os.listdir(upper)) == ["opt", "var"]
    assert len(os.listdir(bin_dir)) == (2 if trash else 0)


def test_a_stub_naming_dot_dot_moves_nothing(tmp_path):
    """The runner gets the stubs from PID 1's status pipe: a path that climbs is refused, not resolved."""
    upper, trash = tmp_path / "upper", tmp_path / "trash"
    (upper / "a").mkdir(parents=True)
    trash.mkdir()
    (tmp_path / "empty").mkdir()
    climbing = Stub(("/a/..", "/../empty"), "/a", (1, 1), (upper / "a").stat().st_mtime_ns)
    assert remove_stubs_in_upper(str(upper), str(trash), [climbing]) == []
    assert (tmp_path / "empty").is_dir() and (upper / "a").is_dir() and os.listdir(trash) == []
