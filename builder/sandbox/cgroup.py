"""A cgroup per RUN: a pids limit by default, optional memory and CPU limits, and every process killed with it.

The runner makes the cgroup (one directory per controller on cgroup v1, one on v2, whichever the host has)
before the init starts; stage 1 of the init joins it before it forks, so every process of the RUN is inside.
When the init is gone the runner kills whatever is left, reads whether a limit was hit (pids.events,
memory.events / memory.oom_control) and removes the directories. They live under `pybuild/` in the builder's
own cgroup, named `<builder pid>-<its start time>-<n>`, so a later build removes what a SIGKILLed one left.
"""
from __future__ import annotations

import errno
import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass

from builder.sandbox.spec import Resources

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "pybuild"
REMOVE_TRIES = 50  # ~0.5 s for the kernel to finish tearing down dying processes
V1_CONTROLLERS = ("pids", "memory", "cpu", "cpuset")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class CgroupError(OSError):
    """The RUN's cgroup cannot be made; the message says where and why."""


def parse_size(text: str) -> int:
    """docker's memory sizes: a number of bytes with an optional b/k/m/g/t suffix (1024-based), e.g. 512m."""
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and not value[-1:].isdigit() else ""
    number = value[: len(value) - len(unit)]
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (a number with an optional b, k, m, g or t suffix)") from None
    total = amount * _SIZE_UNITS[unit]
    if not 1 <= total < float(1 << 62):  # also NaN and infinity
        raise ValueError(f"{text!r} is not a positive size")
    return int(total)


@dataclass(frozen=True)
class Hierarchy:
    """Where RUN cgroups go: v2's one directory, or a directory per v1 controller (each `.../pybuild`)."""

    version: int
    bases: dict[str, str]  # v1: controller → base; v2: {"": base}


def _own_cgroups(text: str) -> dict[str, str]:
    """controller (v1) or "" (v2) → a process's cgroup path, from its /proc/PID/cgroup text."""
    found = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            found[name] = path
    return found


def _mounts(text: str) -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fstype, super options) of every cgroup mount in a mountinfo text."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        dash = fields.index("-")
        if fields[dash + 1] in ("cgroup", "cgroup2"):
            mounts.append((fields[3], fields[4], fields[dash + 1], set(fields[dash + 3].split(","))))
    return mounts


def _join(mount_root: str, mount_point: str, path: str) -> str:
    relative = path[len(mount_root):] if mount_root != "/" and path.startswith(mount_root) else path
    return os.path.join(mount_point, relative.lstrip("/"), PARENT)


def find_hierarchy(proc_cgroup: str | None = None, mountinfo: str | None = None) -> Hierarchy:
    """v1 when a v1 hierarchy has the pids controller (hybrid hosts), else the unified v2 hierarchy; from this
    process's /proc/self/cgroup and mountinfo unless given."""
    own = _own_cgroups(_read("/proc/self/cgroup") if proc_cgroup is None else proc_cgroup)
    mounts = _mounts(_read("/proc/self/mountinfo") if mountinfo is None else mountinfo)
    bases = {}
    for root, point, fstype, options in mounts:
        for name in V1_CONTROLLERS:
            if fstype == "cgroup" and name in options and name in own and name not in bases:
                bases[name] = _join(root, point, own[name])
    if "pids" in bases:
        return Hierarchy(1, bases)
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2" and os.path.exists(os.path.join(point, "cgroup.controllers")):
            if "pids" in _read(os.path.join(point, "cgroup.controllers")).split():
                return Hierarchy(2, {"": _v2_base(_join(root, point, own.get("", "/")))})
    raise CgroupError(errno.ENOENT, "no cgroup hierarchy with the pids controller is mounted")


def _v2_base(base: str) -> str:
    """v2 puts no process in a cgroup with children that use controllers: below our own cgroup when we may enable
    them there, else beside it (in our parent's)."""
    own = os.path.dirname(base)
    try:
        _write(os.path.join(own, "cgroup.subtree_control"), _v2_enable(own))
        return base
    except OSError:
        return os.path.join(os.path.dirname(own), PARENT)


def _v2_enable(parent: str) -> str:
    available = _read(os.path.join(parent, "cgroup.controllers")).split()
    return " ".join("+" + c for c in ("pids", "memory", "cpu", "cpuset") if c in available)


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(value)
    except OSError as exc:
        raise OSError(exc.errno, f"writing {value!r} to {path}: {exc.strerror}") from exc


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


_lock = threading.Lock()
_state: dict[str, Hierarchy] = {}
_numbers = itertools.count(1)


def hierarchy() -> Hierarchy:
    """find_hierarchy, once per process; the first call also removes stale RUN cgroups of dead builds."""
    with _lock:
        if "hierarchy" not in _state:
            found = find_hierarchy()
            for base in found.bases.values():
                remove_stale(base)
            _state["hierarchy"] = found
        return _state["hierarchy"]


def remove_stale(base: str) -> list[str]:
    """Remove the RUN cgroups under `base` whose build is gone (its pid dead or reused); the removed paths."""
    removed: list[str] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        pid, _, rest = name.partition("-")
        start = rest.partition("-")[0]
        if not pid.isdigit() or _start_time(int(pid)) == start:
            continue
        path = os.path.join(base, name)
        _kill_members(path)
        if _remove(path):
            removed.append(path)
    return removed


class RunCgroup:
    """The cgroup of one RUN (see the module docstring)."""

    def __init__(self, resources: Resources) -> None:
        found = hierarchy()
        self.version = found.version
        name = f"{os.getpid()}-{_start_time(os.getpid())}-{next(_numbers)}"
        wanted = _v1_controllers(resources) if found.version == 1 else ("",)
        self.dirs: dict[str, str] = {}
        try:
            for controller in wanted:
                if controller not in found.bases:
                    raise CgroupError(errno.ENOENT, f"the {controller} cgroup controller is not mounted")
                base = found.bases[controller]
                with _lock:  # parallel RUNs: the first makes (and for v1 cpuset, fills) the base
                    if not os.path.isdir(base):
                        _make_base(base, controller, found.version)
                path = os.path.join(base, name)
                os.mkdir(path)
                self.dirs[controller] = path
            self._limit(resources)
        except OSError as exc:
            self.close()
            if isinstance(exc, CgroupError):
                raise
            raise CgroupError(exc.errno, f"setting up the RUN's cgroup: {exc.strerror}") from exc

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self.dirs.values())

    def _limit(self, r: Resources) -> None:
        v1 = self.version == 1
        pids = "max" if r.pids_limit is None or r.pids_limit < 0 else str(r.pids_limit)
        self._set("pids", "pids.max", pids)
        if r.cpuset_cpus is not None:
            if v1:
                _copy_cpuset(self.dirs["cpuset"])  # a v1 cpuset without CPUs and nodes takes no process
            self._set("cpuset", "cpuset.cpus", r.cpuset_cpus)
        if r.memory is not None:
            self._set("memory", "memory.limit_in_bytes" if v1 else "memory.max", str(r.memory))
            swap = r.memory_swap if r.memory_swap is not None else 2 * r.memory  # docker: as much swap as memory
            if v1 and os.path.exists(os.path.join(self.dirs["memory"], "memory.memsw.limit_in_bytes")):
                self._set("memory", "memory.memsw.limit_in_bytes", "-1" if swap < 0 else str(swap))
            elif not v1:
                self._set("memory", "memory.swap.max", "max" if swap < 0 else str(max(0, swap - r.memory)))
        if r.cpu_shares is not None:
            weight = 1 + (r.cpu_shares - 2) * 9999 // 262142  # runc's shares → weight conversion
            self._set("cpu", "cpu.shares" if v1 else "cpu.weight", str(r.cpu_shares if v1 else weight))
        if r.cpu_quota is not None or r.cpu_period is not None:
            period = r.cpu_period or 100000
            if v1:
                self._set("cpu", "cpu.cfs_period_us", str(period))
                self._set("cpu", "cpu.cfs_quota_us", str(r.cpu_quota if r.cpu_quota else -1))
            else:
                self._set("cpu", "cpu.max", f"{r.cpu_quota if r.cpu_quota else 'max'} {period}")

    def _set(self, controller: str, name: str, value: str) -> None:
        _write(os.path.join(self.dirs[controller if self.version == 1 else ""], name), value)

    def limit_hit(self) -> str | None:
        """"pids" when a fork failed at the pids limit, "memory" when the OOM killer killed a process, else None."""
        if _counter(self._file("pids", "pids.events"), "max"):
            return "pids"
        if _counter(self._file("memory", "memory.oom_control" if self.version == 1 else "memory.events"), "oom_kill"):
            return "memory"
        return None

    def _file(self, controller: str, name: str) -> str | None:
        directory = self.dirs.get(controller if self.version == 1 else "")
        return None if directory is None else os.path.join(directory, name)

    def close(self) -> None:
        """Kill every process still in the cgroup and remove its directories (idempotent)."""
        for path in self.dirs.values():
            _kill_members(path)
        for path in list(self.dirs.values()):
            _remove(path)
        self.dirs.clear()


def _make_base(base: str, controller: str, version: int) -> None:
    """The `pybuild` directory: v2 hands its controllers down, v1's cpuset starts with its parent's CPUs and nodes."""
    try:
        os.mkdir(base)
    except FileExistsError:
        return
    if version == 2:
        _write(os.path.join(base, "cgroup.subtree_control"), _v2_enable(base))
    elif controller == "cpuset":
        _copy_cpuset(base)


def _copy_cpuset(path: str) -> None:
    parent = os.path.dirname(path)
    for name in ("cpuset.cpus", "cpuset.mems"):
        _write(os.path.join(path, name), _read(os.path.join(parent, name)).strip())


def _v1_controllers(r: Resources) -> tuple[str, ...]:
    wanted = ["pids"]
    if r.memory is not None:
        wanted.append("memory")
    if r.cpu_shares is not None or r.cpu_quota is not None or r.cpu_period is not None:
        wanted.append("cpu")
    if r.cpuset_cpus is not None:
        wanted.append("cpuset")
    return tuple(wanted)


def _counter(path: str | None, key: str) -> int:
    if path is None:
        return 0
    try:
        text = _read(path)
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _kill_members(path: str) -> None:
    """SIGKILL every process of the cgroup (v2: cgroup.kill; v1: each pid, through a pidfd)."""
    kill_file = os.path.join(path, "cgroup.kill")
    if os.path.exists(kill_file):
        try:
            _write(kill_file, "1")
            return
        except OSError:
            pass
    for _ in range(REMOVE_TRIES):
        members = _members(path)
        if not members:
            return
        pidfds = {}
        for pid in members:
            try:
                pidfds[pid] = os.pidfd_open(pid)
            except OSError:
                continue
        still = _members(path)  # a pidfd opened for a pid still listed here is that member, not a reuse
        for pid, fd in pidfds.items():
            try:
                if pid in still:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)
        time.sleep(0.01)


def _members(path: str) -> set[int]:
    try:
        return {int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()}
    except OSError:
        return set()


def _remove(path: str) -> bool:
    for _ in range(REMOVE_TRIES):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return False
            time.sleep(0.01)
    return False
