"""The per-namespace state directories of RUN's default network, and removing those of namespaces that are gone.

bridge.state_dir() is STATE_DIR/<inode of the network namespace> (its `lock`, the `inuse` lock each build's pool
helper holds shared, and `leases/`). Nothing removes a directory when its namespace goes away, so `pybuild network
prune` removes those whose namespace nothing can reach any more. A namespace counts as live while any process or
thread is in it, any process holds a descriptor on it, or it is bind-mounted (`ip netns add`), as seen in this
/proc (a namespace only another PID namespace's processes reach looks gone). A directory whose `inuse` lock a
build holds is never removed, whatever the scan says, and a removed one is renamed aside before it is deleted.
No pyroute2 here: this is files only.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil

NET_LINK = re.compile(r"net:\[(\d+)\]")
ASIDE = ".gone-"  # a directory being removed: STATE_DIR/.gone-<inode>-<pid of the prune>


def live_net_namespaces(proc: str = "/proc") -> set[int]:
    """Inodes of the network namespaces on this machine that something still reaches (see the module's doc)."""
    live: set[int] = set()
    mount_namespaces: set[str] = set()
    for pid in (name for name in _listdir(proc) if name.isdigit()):
        base = os.path.join(proc, pid)
        live.update(_links([os.path.join(base, "ns", "net")]))
        tasks = os.path.join(base, "task")  # a thread may have setns()ed elsewhere
        live.update(_links([os.path.join(tasks, tid, "ns", "net") for tid in _listdir(tasks)]))
        fds = os.path.join(base, "fd")
        live.update(_links([os.path.join(fds, fd) for fd in _listdir(fds)]))
        mnt = _readlink(os.path.join(base, "ns", "mnt"))
        if mnt is not None and mnt not in mount_namespaces:  # each mount namespace's table once
            mount_namespaces.add(mnt)
            live.update(_bind_mounted(os.path.join(base, "mountinfo")))
    return live


def prune_gone(root: str, proc: str = "/proc") -> list[str]:
    """Remove the state directories under ``root`` of namespaces that are gone; returns their names."""
    names = _listdir(root)
    for name in names:  # left by a prune that was killed while removing
        if name.startswith(ASIDE) and not os.path.exists(os.path.join(proc, name.rsplit("-", 1)[-1])):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    live = live_net_namespaces(proc)
    return [name for name in sorted(names) if name.isdigit() and int(name) not in live and _remove_idle(root, name)]


def _remove_idle(root: str, name: str) -> bool:
    """Rename the directory aside and delete it, unless a build holds its `inuse` lock (then it is live)."""
    path = os.path.join(root, name)
    try:
        fd = os.open(os.path.join(path, "inuse"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1
    except OSError:
        return False
    aside = os.path.join(root, f"{ASIDE}{name}-{os.getpid()}")
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(path, aside)  # held: no build of that namespace can start on it before the rename
    except OSError:  # BlockingIOError: a build holds it; FileNotFoundError: another prune took it
        return False
    finally:
        if fd >= 0:
            os.close(fd)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:  # a process that ended, or one whose fds we may not list
        return []


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _links(paths: list[str]) -> set[int]:
    """The network namespace inodes these /proc links name (readlink, never a stat that would follow a file)."""
    found = set()
    for path in paths:
        target = _readlink(path)
        match = NET_LINK.fullmatch(target) if target else None
        if match:
            found.add(int(match.group(1)))
    return found


def _bind_mounted(mountinfo: str) -> set[int]:
    """Network namespaces bind-mounted in one mount table: nsfs mounts whose root is `net:[inode]`."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return set()
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and " - nsfs " in line and (match := NET_LINK.fullmatch(fields[3])):
            found.add(int(match.group(1)))
    return found
