"""fuse-overlayfs: the layer stack mounted by a FUSE daemon where the kernel refuses overlayfs (the
`fuse-overlayfs` snapshotter, as BuildKit's --oci-worker-snapshotter=fuse-overlayfs; Debian's package).

The daemon runs in the foreground (`-f`) as a child of the process that mounts (the RUN's stage-1 init, the file
helper): it dies with it (PR_SET_PDEATHSIG, set before exec), and its mount dies with that process's private mount
namespace, so nothing survives a crash or SIGKILL. `unmount` ends it cleanly. Its upper directory has the kernel's
layout (0/0 character-device whiteouts) plus its own opaque marks (cache/layertar.py reads both).
Lower paths may be /proc/self/fd/N (see rootfs.HostPaths): those descriptors are inherited by the daemon.
"""
from __future__ import annotations

import errno
import os
import signal
import stat
import time

from builder.sandbox import syscalls as sc
from builder.sandbox.userns import overlay_xattr_prefix

BINARY = "fuse-overlayfs"
NAME = "fuse-overlayfs"
FD_PREFIX = "/proc/self/fd/"


def options(lowers: list[str], upper: str | None, work: str | None) -> str:
    """fuse-overlayfs' -o string; it has no escapes (1.10), so ':' and ',' in a path are refused."""
    for path in (*lowers, upper or "", work or ""):
        if ":" in path or "," in path:
            raise OSError(errno.EINVAL, f"fuse-overlayfs cannot mount a path with ':' or ',': {path}")
    parts = ["lowerdir=" + ":".join(lowers)]
    if upper is not None:
        parts += [f"upperdir={upper}", f"workdir={work}"]
    return ",".join(parts)


def mount(target: str, lowers: list[str], upper: str | None, work: str | None) -> int:
    """Mount the stack on `target` with a fuse-overlayfs child; returns its pid once the mount is there."""
    data = options(lowers, upper, work)
    keep = [int(p[len(FD_PREFIX):]) for p in (*lowers, upper or "", work or "")
            if p.startswith(FD_PREFIX) and p[len(FD_PREFIX):].isdigit()]
    before = os.stat(target).st_dev
    log = os.memfd_create("fuse-overlayfs-log")
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs
        try:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)
            for fd in keep:
                os.set_inheritable(fd, True)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(log, 2)
            os.execvp(BINARY, [BINARY, "-f", "-o", data, target])
        except OSError as exc:
            os.write(log, f"cannot start {BINARY}: {exc.strerror}".encode())
        os._exit(127)
    try:
        while os.stat(target).st_dev == before:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                os.lseek(log, 0, os.SEEK_SET)
                said = os.read(log, 4096).decode(errors="replace").replace("unknown argument ignored: lazytime", "")
                raise OSError(errno.EPERM, f"{BINARY} failed: {said.strip() or 'no mount'}")
            time.sleep(0.001)
    finally:
        os.close(log)
    return pid


def unmount(target: str, pid: int) -> None:
    """Unmount and wait for the daemon (it exits when its mount goes)."""
    try:
        sc.umount2(target, 0)
    except OSError:
        sc.umount2(target, sc.MNT_DETACH)
        os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)


FUSE_XATTR_PREFIX = "user.fuseoverlayfs."
FUSE_OPAQUE = FUSE_XATTR_PREFIX + "opaque"
FUSE_OPAQUE_MARKERS = (".wh..wh..opq", ".wh..opq")  # what it puts in an opaque directory beside the xattr


def normalise_upper(upper: str, lowers: list[str]) -> None:
    """Rewrite a fuse-overlayfs upper in the kernel's format, as a kernel overlay would have left it.

    fuse-overlayfs marks every directory it makes opaque (its xattr and two marker entries), notes copy-ups'
    origins and leaves whiteouts of names no lower layer has; the kernel marks a new directory opaque only where
    it replaces something of a lower layer, and whites out only what a lower layer has. So the
    layer tar (cache/layertar.py) and the snapshot, later a lower of either snapshotter, equal a kernel build's."""
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(upper, rel)
        with os.scandir(path) as entries:
            children = list(entries)
        if _pop_fuse_xattrs(path):
            for child in [c for c in children if c.name in FUSE_OPAQUE_MARKERS]:
                os.unlink(child.path)
                children.remove(child)
            if any(_in_lower(lower, rel) for lower in lowers):
                os.setxattr(path, overlay_xattr_prefix() + "opaque", b"y", follow_symlinks=False)
        for child in children:
            if child.is_dir(follow_symlinks=False):
                stack.append(os.path.join(rel, child.name))
            elif _is_whiteout(child) and not any(_in_lower(lower, os.path.join(rel, child.name))
                                                 for lower in lowers):
                os.unlink(child.path)  # it whites out nothing (a mount point the init made and removed)
            elif not child.is_symlink():
                _pop_fuse_xattrs(child.path)


def _in_lower(lower: str, rel: str) -> bool:
    """Has ``lower`` an entry at ``rel``, never following a symlink of the layer (one may point at the host)?"""
    path = lower
    for part in [p for p in rel.split(os.sep) if p]:
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode) and path != lower:
                return False
        except OSError:
            return False
        path = os.path.join(path, part)
    return os.path.lexists(path)


def _is_whiteout(entry: os.DirEntry) -> bool:
    st = entry.stat(follow_symlinks=False)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _pop_fuse_xattrs(path: str) -> bool:
    """Remove fuse-overlayfs' own xattrs from `path`; was it marked opaque?"""
    try:
        names = [n for n in os.listxattr(path, follow_symlinks=False) if n.startswith(FUSE_XATTR_PREFIX)]
    except OSError:
        return False
    opaque = FUSE_OPAQUE in names and os.getxattr(path, FUSE_OPAQUE, follow_symlinks=False) == b"y"
    for name in names:
        os.removexattr(path, name, follow_symlinks=False)
    return opaque
