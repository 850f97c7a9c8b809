"""Paths inside the container root, and mount-point stubs that must not end up in the layer.

A mount needs an inode to sit on. When the image lacks /etc/hosts, /proc or a bind target, the
sandbox creates it through the overlay, so it lands in the upperdir. Like BuildKit's
`executor/stubs.go MountStubsCleaner`, every path created only to be mounted over is recorded
and removed after the command (if still empty), and the mtime of the directory it was created in
is put back, so `RUN true` on an image without /etc/hosts commits an empty layer.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from builder.sandbox.securejoin import scoped_join
from builder.sandbox.userns import overlay_xattr_prefix

@dataclass(frozen=True, slots=True)
class Stub:
    """Paths created (outermost first, container-absolute) under an existing directory `parent`."""

    created: tuple[str, ...]
    parent: str
    parent_times_before: tuple[int, int]  # (atime_ns, mtime_ns) of parent before the creation
    parent_mtime_after: int  # its mtime right after; a different one later means the command wrote there

    def to_json(self) -> list:
        return [list(self.created), self.parent, list(self.parent_times_before), self.parent_mtime_after]

    @classmethod
    def from_json(cls, data: list) -> Stub:
        created, parent, before, after = data
        return cls(tuple(str(p) for p in created), str(parent), (int(before[0]), int(before[1])), int(after))


def ensure_path(root: str, path: str, *, directory: bool) -> tuple[str, Stub | None]:
    """The host path of container `path`, created (with missing parents) if absent.

    Returns (host_path, stub) where stub records what was created, or None if nothing was.
    """
    host = scoped_join(root, path)
    if os.path.lexists(host):
        return host, None
    rel = os.path.relpath(host, root)
    components = rel.split(os.sep)
    existing = root
    index = 0
    while index < len(components) and os.path.isdir(os.path.join(existing, components[index])):
        existing = os.path.join(existing, components[index])
        index += 1
    before = os.stat(existing)
    created = []
    current = existing
    for position, name in enumerate(components[index:], start=index):
        current = os.path.join(current, name)
        last = position == len(components) - 1
        if last and not directory:
            os.close(os.open(current, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
        else:
            os.mkdir(current, 0o755)
        created.append("/" + os.path.relpath(current, root))
    after = os.stat(existing)
    stub = Stub(tuple(created), "/" + os.path.relpath(existing, root).removeprefix("."),
                (before.st_atime_ns, before.st_mtime_ns), after.st_mtime_ns)
    return host, stub


def remove_stubs(root: str, stubs: list[Stub]) -> list[str]:
    """Undo ensure_path for every stub (newest first) once nothing is mounted on them any more.

    A created path is removed only while it is still empty (the command may have filled a
    directory); the parent's times are restored only if the command did not touch it. Returns the
    parents left exactly as they were (candidates for prune_noop_copy_ups).
    """
    restored = []
    for stub in reversed(stubs):
        parent = os.path.join(root, stub.parent.lstrip("/"))
        try:
            untouched = os.stat(parent).st_mtime_ns == stub.parent_mtime_after
        except OSError:
            untouched = False
        if all(_remove_if_empty(os.path.join(root, path.lstrip("/"))) for path in reversed(stub.created)) \
                and untouched:
            try:
                os.utime(parent, ns=stub.parent_times_before)
                restored.append(stub.parent)
            except OSError:
                pass
    return restored


def remove_stubs_in_upper(upper: str, trash: str, stubs: list[Stub]) -> list[str]:
    """`remove_stubs` done by the runner on the overlay's upper dir once the container and its mounts are gone (as
    BuildKit's MountStubsCleaner runs after the container): same choices, same result in the merged view.

    What goes is moved into `trash`, a directory on the upper's filesystem that is removed with the step's temp
    dirs: a rename costs ~0.05 ms where an rmdir of a new directory costs 2-4 ms on this store's ext4 (and PID 1
    no longer unmounts each stub's mount first). The tree was written by the RUN: every component is opened
    O_NOFOLLOW from the upper, and a symlink (or anything but what was made) stops that stub, which stays."""
    restored: list[str] = []
    root = os.open(upper, _DIRECTORY)
    bin_fd = os.open(trash, _DIRECTORY)
    try:
        for number, stub in enumerate(reversed(stubs)):
            parent = _walk(root, stub.parent)
            if parent is None:
                continue
            try:
                untouched = os.fstat(parent).st_mtime_ns == stub.parent_mtime_after
                gone = all(_move_if_empty(root, path, bin_fd, f"{number}-{depth}")
                           for depth, path in enumerate(reversed(stub.created)))
                if gone and untouched:
                    os.utime(parent, ns=stub.parent_times_before)
                    restored.append(stub.parent)
            except OSError:
                pass
            finally:
                os.close(parent)
    finally:
        os.close(root)
        os.close(bin_fd)
    return restored


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(root: int, path: str) -> int | None:
    """A descriptor of directory `path` below `root`, opened without following any symlink; None if it is not one."""
    fd = os.dup(root)
    try:
        for name in [part for part in path.split("/") if part]:
            if name in (".", ".."):
                raise OSError(errno.EINVAL, "not a plain path")
            child = os.open(name, _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError:
        os.close(fd)
        return None
    return fd


def _move_if_empty(root: int, path: str, bin_fd: int, name: str) -> bool:
    """Move `path` (below `root`) into the trash if it is an empty directory or empty regular file."""
    head, _, last = path.rstrip("/").rpartition("/")
    parent = None if last in ("", ".", "..") else _walk(root, head)
    if parent is None:
        return False
    try:
        info = os.lstat(last, dir_fd=parent)
        if stat.S_ISDIR(info.st_mode):
            directory = os.open(last, _DIRECTORY, dir_fd=parent)
            try:
                if os.listdir(directory):
                    return False
            finally:
                os.close(directory)
        elif not (stat.S_ISREG(info.st_mode) and info.st_size == 0):
            return False
        try:
            os.rename(last, name, src_dir_fd=parent, dst_dir_fd=bin_fd)
        except OSError:  # another filesystem after all: remove it here
            if stat.S_ISDIR(info.st_mode):
                os.rmdir(last, dir_fd=parent)
            else:
                os.unlink(last, dir_fd=parent)
        return True
    except OSError:
        return False
    finally:
        os.close(parent)


def _remove_if_empty(host: str) -> bool:
    """Remove an empty directory or empty regular file; False if it is anything else or gone."""
    try:
        info = os.lstat(host)
        if stat.S_ISDIR(info.st_mode):
            os.rmdir(host)
        elif stat.S_ISREG(info.st_mode) and info.st_size == 0:
            os.unlink(host)
        else:
            return False
    except OSError:
        return False  # not empty, or gone: keep what the command made of it
    return True


def _xattrs(path: str) -> dict[str, bytes]:
    """Extended attributes that belong to the file, not to overlayfs' bookkeeping."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names
            if not n.startswith(overlay_xattr_prefix())}


def prune_noop_copy_ups(upperdir: str, lowerdirs: tuple[str, ...], directories: list[str],
                        trash: str | None = None) -> None:
    """Remove directories the overlay copied up only because a stub was made (and removed) in them.

    Call after the overlay is unmounted. A directory goes only if in the upperdir it is empty, not
    opaque, and identical (type, mode, owner, mtime, xattrs) to the top-most lower copy, so the
    merged view is the same without it. Deepest first, so /a/b goes before /a is considered.
    With `trash` (a directory on the upper's filesystem) it is moved there instead of removed (see
    remove_stubs_in_upper: a rename, not a 2-4 ms rmdir).
    """
    for number, path in enumerate(sorted(set(directories), key=lambda p: p.count("/"), reverse=True)):
        rel = path.strip("/")
        if not rel:
            continue
        upper = os.path.join(upperdir, rel)
        lower = next((os.path.join(d, rel) for d in lowerdirs if os.path.lexists(os.path.join(d, rel))), None)
        try:
            upper_info = os.lstat(upper)
            if lower is None or not stat.S_ISDIR(upper_info.st_mode) or os.listdir(upper):
                continue
            lower_info = os.lstat(lower)
        except OSError:
            continue
        same = (stat.S_ISDIR(lower_info.st_mode) and upper_info.st_mode == lower_info.st_mode
                and (upper_info.st_uid, upper_info.st_gid) == (lower_info.st_uid, lower_info.st_gid)
                and upper_info.st_mtime_ns == lower_info.st_mtime_ns)
        if same and _xattrs(upper) == _xattrs(lower) and not _opaque(upper):
            # rmdir touches the parent's mtime; put it back so the parent can be judged as unchanged.
            parent = os.stat(os.path.dirname(upper))
            try:
                if trash is None:
                    raise OSError("no trash")
                os.rename(upper, os.path.join(trash, f"pruned-{number}"))
            except OSError:
                os.rmdir(upper)
            os.utime(os.path.dirname(upper), ns=(parent.st_atime_ns, parent.st_mtime_ns))


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, overlay_xattr_prefix() + "opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False
