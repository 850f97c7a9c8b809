"""What a build container is: the contract between the builder and the sandbox init.

A ContainerSpec travels as JSON from the (threaded) builder to a freshly exec'd
`python -m builder.sandbox.init` (STYLE.md habit 8), so every field is plain data.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass

MOUNT_TYPES = ("bind", "tmpfs", "overlay")
NETWORK_MODES = ("none", "host", "bridge")
SNAPSHOTTERS = ("overlayfs", "fuse-overlayfs")
SPEC_VERSION = 1


class SpecError(ValueError):
    """A ContainerSpec that cannot describe a container (bad path, unknown mode)."""


@dataclass(frozen=True, slots=True)
class Mount:
    """An extra mount inside the container; `target` is absolute inside the container."""

    type: str  # "bind" | "tmpfs" | "overlay"
    source: str  # bind: the host path; overlay: the path inside the overlay that is mounted ("/": all of it)
    target: str
    readonly: bool = False
    options: tuple[str, ...] = ()
    # overlay (RUN --mount=type=bind,from=<stage>): the stage's snapshot dirs, top-most first, merged inside the
    # container; with upperdir/workdir (rw) writes land there and are thrown away with them.
    lowerdirs: tuple[str, ...] = ()
    upperdir: str | None = None
    workdir: str | None = None

    def __post_init__(self) -> None:
        if self.type not in MOUNT_TYPES:
            raise SpecError(f"mount type {self.type!r} is not one of {', '.join(MOUNT_TYPES)}")
        if not posixpath.isabs(self.target):
            raise SpecError(f"mount target {self.target!r} is not an absolute path")
        if posixpath.normpath(self.target) == "/":
            raise SpecError("a mount cannot replace the container's root directory")
        if self.type in ("bind", "overlay") and not posixpath.isabs(self.source):
            raise SpecError(f"{self.type} mount source {self.source!r} is not an absolute path")
        if self.type == "overlay":
            if not self.lowerdirs or not all(posixpath.isabs(d) for d in self.lowerdirs):
                raise SpecError("an overlay mount needs absolute lowerdirs")
            if (self.upperdir is None) != (self.workdir is None):
                raise SpecError("an overlay mount's upperdir and workdir go together: give both or neither")
        elif self.lowerdirs or self.upperdir or self.workdir:
            raise SpecError(f"lowerdirs/upperdir/workdir belong to overlay mounts, not {self.type}")


DEFAULT_PIDS_LIMIT = 4096  # podman's default up to 4.3 (2048 since); docker and BuildKit set none


@dataclass(frozen=True, slots=True)
class Resources:
    """The RUN's cgroup limits (docker build's flags); None: no limit."""

    pids_limit: int | None = DEFAULT_PIDS_LIMIT  # None or < 0: unlimited
    memory: int | None = None  # bytes
    memory_swap: int | None = None  # memory + swap in bytes (docker's --memory-swap); -1: unlimited swap
    cpu_quota: int | None = None  # microseconds of CPU per period
    cpu_period: int | None = None  # microseconds (default 100000)
    cpu_shares: int | None = None  # relative weight (docker: 1024 = normal)
    cpuset_cpus: str | None = None  # "0-1", "0,2"

    def __post_init__(self) -> None:
        if self.pids_limit == 0:
            raise SpecError("a pids limit of 0 lets no process start; use -1 for no limit")
        if self.memory_swap is not None and self.memory_swap >= 0 and (
                self.memory is None or self.memory_swap < self.memory):
            raise SpecError("the memory+swap limit needs a memory limit no larger than itself")
        if self.cpu_period is not None and not 1000 <= self.cpu_period <= 1000000:
            raise SpecError("the CPU period must be between 1000 and 1000000 microseconds")
        if self.cpu_quota is not None and self.cpu_quota < 1000:
            raise SpecError("the CPU quota must be at least 1000 microseconds")
        if self.cpu_shares is not None and not 2 <= self.cpu_shares <= 262144:
            raise SpecError("CPU shares must be between 2 and 262144")


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One process to run in a fresh container on an overlay of `lowerdirs` (+ `upperdir`)."""

    argv: tuple[str, ...]
    lowerdirs: tuple[str, ...]  # overlay lowerdirs, top-most first; () = an empty root (scratch)
    upperdir: str | None  # None: the root filesystem is read-only
    workdir: str | None  # overlay workdir, on the upperdir's filesystem
    env: tuple[str, ...] = ()  # "K=V"
    cwd: str = "/"
    user: str = ""  # "" = root; "name", "uid", "uid:gid", "name:group"
    hostname: str = "pybuild"
    network: str = "none"  # "none" | "host" | "bridge" (setns into netns_fd, a namespace of netpool.py)
    netns_fd: int | None = None  # bridge: the prepared namespace's descriptor, passed to the init at this number
    netns_address: str = ""  # bridge: the container's address (its /etc/hosts line)
    mounts: tuple[Mount, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()  # (hostname, ip) lines added to /etc/hosts
    tty: bool = False  # stdin is a pseudo-terminal (the caller's): the command gets it as controlling terminal
    sysfs: bool = True  # mount a read-only /sys
    # RUN --security=insecure (with the operator's --allow security.insecure): every capability, no seccomp
    # filter, no no_new_privs, as BuildKit's insecure mode.
    insecure: bool = False
    resources: Resources = Resources()  # the runner makes a cgroup with these limits...
    cgroups: tuple[str, ...] = ()  # ...and fills in its directories, which stage 1 of the init joins
    snapshotter: str = "overlayfs"  # "overlayfs" (the kernel's) | "fuse-overlayfs" (builder/sandbox/fuse.py)

    def __post_init__(self) -> None:
        if not self.argv:
            raise SpecError("no command to run")
        if self.network not in NETWORK_MODES:
            raise SpecError(f"network mode {self.network!r} is not one of {', '.join(NETWORK_MODES)}")
        if (self.network == "bridge") != (self.netns_fd is not None):
            raise SpecError("a bridge network needs the descriptor of its namespace, and only it has one")
        if (self.upperdir is None) != (self.workdir is None):
            raise SpecError("upperdir and workdir go together: give both or neither")
        if self.snapshotter not in SNAPSHOTTERS:
            raise SpecError(f"snapshotter {self.snapshotter!r} is not one of {', '.join(SNAPSHOTTERS)}")
        if not posixpath.isabs(self.cwd):
            raise SpecError(f"working directory {self.cwd!r} is not an absolute path")
        for item in self.env:
            if "=" not in item:
                raise SpecError(f"environment entry {item!r} is not KEY=VALUE")
        if not self.hostname or len(self.hostname) > 64:
            raise SpecError(f"hostname {self.hostname!r} must be 1 to 64 characters")

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, a version field); from_json reverses it."""
        data = asdict(self)
        data["v"] = SPEC_VERSION
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ContainerSpec":
        data = json.loads(text)
        version = data.pop("v", None)
        if version != SPEC_VERSION:
            raise SpecError(f"container spec version {version!r} is not {SPEC_VERSION}")
        data["argv"] = tuple(data["argv"])
        data["lowerdirs"] = tuple(data["lowerdirs"])
        data["env"] = tuple(data.get("env", ()))
        data["mounts"] = tuple(Mount(**{**m, "options": tuple(m.get("options", ())),
                                        "lowerdirs": tuple(m.get("lowerdirs", ()))})
                               for m in data.get("mounts", ()))
        data["extra_hosts"] = tuple((host, ip) for host, ip in data.get("extra_hosts", ()))
        data["resources"] = Resources(**data.get("resources", {}))
        data["cgroups"] = tuple(data.get("cgroups", ()))
        return cls(**data)

    def env_value(self, key: str, default: str | None = None) -> str | None:
        """The last value of `key` in env (later entries win, as in execve users' habit)."""
        value = default
        for item in self.env:
            name, _, rest = item.partition("=")
            if name == key:
                value = rest
        return value
