"""Paths inside the container root, and mount-point stubs that must not end up in the layer.

A mount needs an inode to sit on. When the image lacks /etc/hosts, /proc or a bind target, the
sandbox creates it through the overlay, so it lands in the upperdir. Like BuildKit's
`executor/stubs.go MountStubsCleaner`, every path created only to be mounted over is recorded
and removed after the command (if still empty), and the mtime of the directory it was created in
is put back, so `RUN true` on an image without /etc/hosts commits an empty layer.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

MAX_SYMLINKS = 255


def resolve_in_root(root: str, path: str) -> str:
    """`path` (absolute, in the container) as a host path under `root`, following symlinks the way
    the container would see them: absolute links restart at `root`, ".." stops at `root`.

    Missing components are kept literally. The result never leaves `root`.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, name)
        try:
            info = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(name)
            continue
        if not stat.S_ISLNK(info.st_mode):
            resolved.append(name)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(40, f"too many levels of symbolic links resolving {path}")
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return os.path.join(root, *resolved)


@dataclass(frozen=True, slots=True)
class Stub:
    """Paths created (outermost first, container-absolute) under an existing directory `parent`."""

    created: tuple[str, ...]
    parent: str
    parent_times_before: tuple[int, int]  # (atime_ns, mtime_ns) of parent before the creation
    parent_mtime_after: int  # its mtime right after; a different one later means the command wrote there


def ensure_path(root: str, path: str, *, directory: bool, create: bool = True) -> tuple[str, Stub | None]:
    """The host path of container `path`, created (with missing parents) if absent.

    Returns (host_path, stub) where stub records what was created, or None if nothing was.
    With create=False a missing path raises FileNotFoundError instead.
    """
    host = resolve_in_root(root, path)
    if os.path.lexists(host):
        return host, None
    if not create:
        raise FileNotFoundError(2, f"{path} does not exist in the container")
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


def remove_stubs(root: str, stubs: list[Stub]) -> None:
    """Undo ensure_path for every stub (newest first) once nothing is mounted on them any more.

    A created path is removed only while it is still empty (the command may have filled a
    directory); the parent's times are restored only if the command did not touch it.
    """
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
            except OSError:
                pass


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
