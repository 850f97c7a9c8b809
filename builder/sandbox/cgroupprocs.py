"""Joining the RUN's cgroups from inside (stage 1 and PID 1 of builder/sandbox/init.py): cgroup.procs files opened
while the host's /sys is reachable, written once the process to move exists. The runner makes the cgroups
(builder/sandbox/cgroup.py)."""
from __future__ import annotations

import os


def join_cgroups(paths: tuple[str, ...]) -> None:
    """Move this process into the RUN's cgroup directories (made by the runner: cgroup.py)."""
    write_pid(open_cgroups(paths), 0)


def open_cgroups(paths: tuple[str, ...]) -> dict[str, int]:
    """The cgroup.procs files of the RUN's cgroups, opened for writing (by path), while the host's /sys is here:
    PID 1's pivot_root moves the root of every process of its mount namespace, stage 1's too."""
    opened: dict[str, int] = {}
    for path in paths:
        try:
            opened[path] = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            for fd in opened.values():
                os.close(fd)
            raise OSError(exc.errno, f"joining the RUN's cgroup {path}: {exc.strerror}") from exc
    return opened


def write_pid(opened: dict[str, int], pid: int) -> None:
    """Move `pid` (0: this process) into each opened cgroup; the descriptors are closed."""
    try:
        for path, fd in opened.items():
            try:
                os.write(fd, str(pid).encode())
            except OSError as exc:
                raise OSError(exc.errno, f"joining the RUN's cgroup {path}: {exc.strerror}") from exc
    finally:
        for fd in opened.values():
            os.close(fd)
