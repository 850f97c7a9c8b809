"""--snapshotter: the choice (builder/snapshotter.py) and fuse-overlayfs' upper in the kernel's format (sandbox/fuse.py)."""
from __future__ import annotations

import errno
import os

import pytest

from builder import snapshotter
from builder.errors import UsageError
from builder.sandbox import fuse


@pytest.fixture(autouse=True)
def _fresh_choice():
    snapshotter.request("auto")
    yield
    snapshotter.request("auto")


def test_root_mode_auto_is_the_kernels_overlayfs():
    assert snapshotter.current() == "overlayfs"


def test_a_forced_choice_is_kept():
    snapshotter.request("overlayfs")
    assert snapshotter.current() == "overlayfs"


def test_fuse_overlayfs_without_the_tool_is_one_usage_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    snapshotter.request("fuse-overlayfs")
    with pytest.raises(UsageError, match="fuse-overlayfs is not installed") as caught:
        snapshotter.current()
    assert "apt-get install fuse-overlayfs" in caught.value.hint


def test_fuse_options_refuse_what_they_cannot_escape():
    assert fuse.options(["/a", "/b"], "/u", "/w") == "lowerdir=/a:/b,upperdir=/u,workdir=/w"
    assert fuse.options(["/a"], None, None) == "lowerdir=/a"
    with pytest.raises(OSError) as caught:
        fuse.options(["/a:b"], None, None)
    assert caught.value.errno == errno.EINVAL


def _xattrs(path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}


def test_a_fuse_upper_is_rewritten_as_the_kernel_would_have_left_it(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("root: whiteouts need mknod, the opaque mark trusted.* xattrs")
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "replaced").mkdir(parents=True)
    (lower / "gone").write_text("x")
    upper.mkdir()
    try:
        os.setxattr(upper, "user.probe", b"1")
        os.mknod(upper / "gone", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout of what the lower has
        os.mknod(upper / "stub", 0o600 | 0o020000, os.makedev(0, 0))  # a whiteout of nothing (a removed stub)
    except OSError as exc:
        pytest.skip(f"needs user xattrs and mknod here: {exc.strerror}")
    for name in ("new", "replaced"):  # fuse-overlayfs marks every directory it makes opaque, with two markers
        (upper / name).mkdir()
        os.setxattr(upper / name, "user.fuseoverlayfs.opaque", b"y")
        (upper / name / ".wh..wh..opq").write_text("")
        os.mknod(upper / name / ".wh..opq", 0o600 | 0o020000, os.makedev(0, 0))
        (upper / name / "f").write_text("kept")
    os.setxattr(upper / "new" / "f", "user.fuseoverlayfs.origin", b"f\0")
    fuse.normalise_upper(str(upper), [str(lower)])
    assert sorted(os.listdir(upper)) == ["gone", "new", "replaced"]
    assert os.listdir(upper / "new") == ["f"] and os.listdir(upper / "replaced") == ["f"]
    assert _xattrs(upper / "new") == {} and _xattrs(upper / "new" / "f") == {}
    assert _xattrs(upper / "replaced") == {"trusted.overlay.opaque": b"y"}  # root here: the kernel's own name


def test_normalising_a_fuse_upper_never_looks_through_a_lower_layers_symlink(tmp_path):
    """A lower layer's `d -> /host/dir` must not make the layer depend on what the host has there: the upper's
    whiteout d/secret (a RUN made and removed it in its own d) is dropped whether or not /host/dir/secret exists,
    as the kernel snapshotter leaves none (hostile test: the whiteout was kept iff the host had the file)."""
    if os.geteuid() != 0:
        pytest.skip("root: whiteouts need mknod")
    host, lower, upper = tmp_path / "host", tmp_path / "lower", tmp_path / "upper"
    host.mkdir()
    (host / "secret").write_text("the host's")
    lower.mkdir()
    (lower / "d").symlink_to(host)
    (upper / "d").mkdir(parents=True)
    try:
        os.setxattr(upper / "d", "user.fuseoverlayfs.opaque", b"y")
        os.mknod(upper / "d" / "secret", 0o600 | 0o020000, os.makedev(0, 0))
    except OSError as exc:
        pytest.skip(f"needs user xattrs and mknod here: {exc.strerror}")
    fuse.normalise_upper(str(upper), [str(lower)])
    assert os.listdir(upper / "d") == []
