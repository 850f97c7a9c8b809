"""The container's root filesystem: overlay, /proc, /dev, /sys, generated /etc files, user mounts.

Runs in the container's PID 1, inside the private mount namespace the init made, before
pivot_root. Mount details follow runc `libcontainer/rootfs_linux.go` and the OCI default spec
that BuildKit uses (flags, /dev contents, masked and read-only /proc paths).

Layout inside the private namespace (nothing of it is visible on the host):
    <scratch>/          a tmpfs mounted over the host's /tmp (in this namespace only)
        root/           the overlay (the future "/")
        files/          generated hosts, resolv.conf, hostname: bind-mounted, never in the layer
        empty/          the lower layer of a scratch image
        upper/ work/    a throw-away overlay upper when the root is read-only
Host directories (layers, bind sources) are opened as O_PATH descriptors *before* the scratch
tmpfs hides /tmp and are mounted through /proc/self/fd/N, so they may live anywhere.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from builder.sandbox import fuse
from builder.sandbox import syscalls as sc
from builder.sandbox.network import hosts_file, resolv_conf
from builder.sandbox.spec import ContainerSpec, Mount
from builder.sandbox.securejoin import scoped_join
from builder.sandbox.stubs import Stub, ensure_path
from builder.sandbox.userns import gid_mapped, in_user_namespace

SCRATCH_CANDIDATES = ("/tmp", "/mnt", "/run", "/var/tmp")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))
# moby's current default masked and read-only paths (daemon/pkg/oci/defaults.go; containerd's, which BuildKit
# uses, lack /proc/interrupts and the thermal_throttle directories: GHSA-6fw5-f8r9-fgfm).
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
                "/sys/devices/virtual/powercap", "/sys/firmware")
CPU_DIR = "/sys/devices/system/cpu"  # + cpuN/thermal_throttle of each CPU that has one: masked too
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
FLAG_OPTIONS = {"ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID, "nodev": sc.MS_NODEV, "noexec": sc.MS_NOEXEC}
USER_MOUNT_FLAGS = sc.MS_NODEV | sc.MS_NOSUID  # every tmpfs, cache, bind, secret and ssh mount of a RUN
GENERATED_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


@dataclass
class Rootfs:
    """What setup made: the root's path before pivot_root, and stubs to remove afterwards."""

    root: str
    writable: bool  # writes land in the caller's upperdir (else: read-only root, throw-away upper)
    stubs: list[Stub] = field(default_factory=list)
    stub_mounts: list[str] = field(default_factory=list)  # container paths mounted over stubs
    daemons: list[int] = field(default_factory=list)  # fuse-overlayfs children of the process that mounted


@dataclass(frozen=True)
class OverlayPaths:
    """/proc/self/fd paths of an overlay mount's directories (see HostPaths)."""

    lowers: tuple[str, ...]
    upper: str | None
    work: str | None


class HostPaths:
    """O_PATH descriptors for the spec's host directories and files, opened before the scratch tmpfs
    can hide them; each is mounted through its /proc/self/fd/N magic link."""

    def __init__(self, spec: ContainerSpec) -> None:
        self.fds: list[int] = []
        self.lowers = [self._open(p, "layer directory") for p in spec.lowerdirs]
        self.upper = None if spec.upperdir is None else self._open(spec.upperdir, "upper directory")
        self.work = None if spec.workdir is None else self._open(spec.workdir, "overlay work directory")
        # fuse-overlayfs resolves its paths by name (hidden by the scratch tmpfs): the upper and work directories'
        # common parent is bound into the scratch (one mount, so that the daemon's renames stay on it)
        self.rw_parent = None
        if spec.snapshotter == "fuse-overlayfs" and spec.upperdir is not None:
            if os.path.dirname(spec.upperdir) != os.path.dirname(spec.workdir or ""):
                raise OSError(errno.EINVAL, "fuse-overlayfs: the upper and work directories must be siblings")
            self.rw_parent = self._open(os.path.dirname(spec.upperdir), "upper directory's parent")
            self.rw_names = (os.path.basename(spec.upperdir), os.path.basename(spec.workdir or ""))
        self.binds = {i: self._open(m.source, "bind mount source")
                      for i, m in enumerate(spec.mounts) if m.type == "bind"}
        self.overlays = {i: OverlayPaths(tuple(self._open(d, "mounted stage layer") for d in m.lowerdirs),
                                         None if m.upperdir is None else self._open(m.upperdir, "upper directory"),
                                         None if m.workdir is None else self._open(m.workdir, "work directory"))
                         for i, m in enumerate(spec.mounts) if m.type == "overlay"}

    def _open(self, path: str, what: str) -> str:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError as exc:
            raise OSError(exc.errno, f"opening {what} {path}: {exc.strerror}") from exc
        self.fds.append(fd)
        return f"/proc/self/fd/{fd}"

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def mount_scratch() -> str:
    """Mount a private tmpfs for the root mount point and generated files; returns its path."""
    target = next(p for p in SCRATCH_CANDIDATES if os.path.isdir(p))
    sc.mount("tmpfs", target, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=700,size=16m")
    for name in ("root", "files", "empty"):
        os.mkdir(os.path.join(target, name), 0o755)
    return target


def mount_overlay(host: HostPaths, scratch: str, fuse_overlayfs: bool = False) -> Rootfs:
    """Mount the container root on <scratch>/root, writable for now (see make_read_only).

    Without an upperdir the overlay gets a throw-away upper on the scratch tmpfs: mount points the
    image lacks can still be created, and make_read_only() then locks the root. `fuse_overlayfs`: mounted by
    a fuse-overlayfs child of this process (builder/sandbox/fuse.py) instead of the kernel.
    """
    root = os.path.join(scratch, "root")
    lowers = host.lowers or [os.path.join(scratch, "empty")]
    upper, work = host.upper, host.work
    if upper is None:
        upper, work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
        os.mkdir(upper, 0o755)
        os.mkdir(work, 0o700)
    if fuse_overlayfs:
        lowers = _bound(scratch, lowers)
        if host.rw_parent is not None:
            rw = _bound(scratch, [host.rw_parent], "rw")[0]
            upper, work = (os.path.join(rw, name) for name in host.rw_names)
        daemon = fuse.mount(root, lowers, upper, work)
        return Rootfs(root, writable=host.upper is not None, daemons=[daemon])
    # nodev: device nodes a RUN makes (CAP_MKNOD) cannot be opened; /dev's nodes are separate binds.
    options = sc.overlay_options(lowers, upper, work)
    assert work is not None  # HostPaths holds an upper and a work dir together (spec.py checks)
    sc.mount_overlay_volatile(root, sc.MS_NODEV, options, work)
    return Rootfs(root, writable=host.upper is not None)


def _bound(scratch: str, paths: list[str] | tuple[str, ...], prefix: str = "lower") -> list[str]:
    """/proc/self/fd/N directories bound into the scratch tmpfs, for fuse-overlayfs (which wants names)."""
    import tempfile  # lazy: saves ~6 ms at start-up; only the fuse-overlayfs snapshotter gets here

    bound = []
    for path in paths:
        if not path.startswith("/proc/self/fd/"):
            bound.append(path)
            continue
        target = tempfile.mkdtemp(dir=scratch, prefix=f"{prefix}-")
        sc.mount(path, target, None, sc.MS_BIND)
        bound.append(target)
    return bound


def make_read_only(rootfs: Rootfs) -> None:
    """Remount the root read-only (the mounts on it keep their own flags)."""
    sc.mount(None, rootfs.root, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)


def _target(rootfs: Rootfs, path: str, *, directory: bool) -> str:
    """Host path of a mount target, creating it (recorded as a stub) when the image lacks it."""
    host, stub = ensure_path(rootfs.root, path, directory=directory)
    if stub is not None:
        rootfs.stubs.append(stub)
        rootfs.stub_mounts.append(path)
    return host


def mount_proc_dev_sys(rootfs: Rootfs, *, sysfs: bool, insecure: bool = False) -> None:
    """/proc (this PID namespace's), a minimal /dev, optionally /sys (read-only unless insecure), masked paths
    (none when insecure, as BuildKit's security.insecure)."""
    proc = _target(rootfs, "/proc", directory=True)
    sc.mount("proc", proc, "proc", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV)
    dev = _target(rootfs, "/dev", directory=True)
    _mount_dev(dev)
    if sysfs:
        sys_dir = _target(rootfs, "/sys", directory=True)
        try:
            sc.mount("sysfs", sys_dir, "sysfs", (0 if insecure else sc.MS_RDONLY) | sc.MS_NOSUID | sc.MS_NOEXEC
                     | sc.MS_NODEV)
        except OSError as exc:  # rootless with the host's network: sysfs wants a network namespace of our own
            if exc.errno != errno.EPERM or not in_user_namespace():
                raise
            sc.mount("/sys", sys_dir, None, sc.MS_BIND | sc.MS_REC)  # what rootless podman does
            sc.mount(None, sys_dir, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _statvfs_flags(sys_dir))
    if not insecure:
        _mask_paths(rootfs.root, dev)


def _mount_dev(dev: str) -> None:
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_STRICTATIME, "mode=755,size=65536k")
    for name in DEVICES:
        node = os.path.join(dev, name)
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY, 0o666))
        # Bind the host's node: mknod would need the nodev flag lifted and breaks in user namespaces.
        sc.mount(f"/dev/{name}", node, None, sc.MS_BIND)
    # gid=5 (tty) only where that group is mapped: a single-id user namespace refuses it (EINVAL)
    pts = "newinstance,ptmxmode=0666,mode=0620" + (",gid=5" if gid_mapped(5) else "")
    for name, flags, data in (("pts", sc.MS_NOSUID | sc.MS_NOEXEC, pts),
                              ("shm", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "mode=1777,size=65536k"),
                              ("mqueue", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None)):
        os.mkdir(os.path.join(dev, name), 0o755)
        fstype = {"pts": "devpts", "shm": "tmpfs", "mqueue": "mqueue"}[name]
        sc.mount(fstype, os.path.join(dev, name), fstype, flags, data)
    for name, target in DEV_SYMLINKS:
        os.symlink(target, os.path.join(dev, name))


def _mask_paths(root: str, dev: str) -> None:
    """Hide kernel interfaces a build has no business with, and make others read-only (OCI defaults)."""
    null = os.path.join(dev, "null")
    try:
        cpus = [f"{CPU_DIR}/{n}/thermal_throttle" for n in os.listdir(scoped_join(root, CPU_DIR))
                if n.startswith("cpu") and n[3:].isdigit()]
    except OSError:
        cpus = []  # no /sys in this container
    for path in (*MASKED_PATHS, *cpus):
        host = scoped_join(root, path)
        try:
            info = os.lstat(host)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            sc.mount("tmpfs", host, "tmpfs", sc.MS_RDONLY, "size=0")
        else:
            sc.mount(null, host, None, sc.MS_BIND)
    for path in READONLY_PATHS:
        host = scoped_join(root, path)
        if not os.path.lexists(host):
            continue
        sc.mount(host, host, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, host, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
                 | sc.MS_NOEXEC)


def mount_generated_files(rootfs: Rootfs, spec: ContainerSpec, scratch: str, host_resolv: str | None) -> None:
    """/etc/hosts, /etc/resolv.conf and /etc/hostname as bind mounts of generated files."""
    contents = {
        "/etc/hosts": hosts_file(spec.hostname, spec.extra_hosts, spec.netns_address),
        "/etc/resolv.conf": resolv_conf(spec.network, host_resolv),
        "/etc/hostname": spec.hostname + "\n",
    }
    for path in GENERATED_FILES:
        source = os.path.join(scratch, "files", os.path.basename(path))
        with open(source, "w", encoding="utf-8") as handle:
            handle.write(contents[path])
        os.chmod(source, 0o644)
        target = _target(rootfs, path, directory=False)
        if os.path.isdir(target):
            continue  # the image has a directory there: leave it alone rather than fail the build
        sc.mount(source, target, None, sc.MS_BIND)


def mount_user(rootfs: Rootfs, mounts: tuple[Mount, ...], sources: dict[int, str],
               overlays: dict[int, OverlayPaths] | None = None, fuse_overlayfs: bool = False) -> None:
    """Bind, tmpfs and overlay mounts of the spec, shallowest target first (parents before children)."""
    order = sorted(range(len(mounts)), key=lambda i: len([p for p in mounts[i].target.split("/") if p]))
    for index in order:
        item = mounts[index]
        try:
            if item.type == "overlay":
                _mount_overlay(rootfs, item, (overlays or {})[index], fuse_overlayfs)
                continue
            _mount_one(rootfs, item, sources.get(index))
        except OSError as exc:
            # our own messages as they are; a syscall's errno alone (its text names scratch paths)
            reason = exc.strerror if isinstance(exc, _Missing) else os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(exc.errno, f"mounting {item.source} on {item.target}: {reason}") from exc


def _mount_one(rootfs: Rootfs, item: Mount, source: str | None) -> None:
    flags, data = _parse_options(item.options)
    # No device nodes (a RUN has CAP_MKNOD) and no setuid from what the builder mounts in: docker's devices
    # cgroup does the first job for it, and its tmpfs mounts are nosuid,nodev too.
    flags |= USER_MOUNT_FLAGS
    if item.readonly:
        flags |= sc.MS_RDONLY
    if item.type == "tmpfs":
        target = _target(rootfs, item.target, directory=True)
        sc.mount("tmpfs", target, "tmpfs", flags, ",".join(data) or None)
        return
    assert source is not None
    target = _target(rootfs, item.target, directory=os.path.isdir(source))
    sc.mount(source, target, None, sc.MS_BIND | sc.MS_REC)
    # A bind mount takes its flags only on a remount; keep the source mount's own locks.
    sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | flags | _statvfs_flags(target))


class _Missing(FileNotFoundError):
    """A mount source absent from its stage: the message is meant for the user."""


def _mount_overlay(rootfs: Rootfs, item: Mount, paths: OverlayPaths, fuse_overlayfs: bool = False) -> None:
    """Merge a stage's layers on the scratch tmpfs, bind `item.source` of it (resolved inside the merged tree:
    its symlinks cannot leave it) onto the target, and detach the merged mount (the bind keeps what it needs)."""
    scratch = os.path.dirname(rootfs.root)
    # lazy: saves ~4 ms at start-up
    import tempfile  # only RUN --mount=type=bind,from=<stage> gets here (see shutil above)

    merged = tempfile.mkdtemp(dir=scratch, prefix="stage-")
    lowers = list(paths.lowers)
    if paths.upper is None and len(lowers) == 1:
        lowers.append(os.path.join(scratch, "empty"))  # overlay wants two lowers when it has no upper
    if fuse_overlayfs:  # PID 1's own daemon would lose its /proc at pivot_root (stage 1's keeps a namespace apart)
        raise OSError(errno.EOPNOTSUPP, "a stage mounted in a RUN is not supported with --snapshotter "
                                        "fuse-overlayfs yet (use the kernel's overlayfs)")
    sc.mount("overlay", merged, "overlay", sc.MS_NODEV | (sc.MS_RDONLY if paths.upper is None else 0),
             sc.overlay_options(lowers, paths.upper, paths.work))
    try:
        source = scoped_join(merged, item.source)
        if not os.path.lexists(source):
            raise _Missing(errno.ENOENT, f"{item.source} not found in the mounted stage or image")
        target = _target(rootfs, item.target, directory=os.path.isdir(source))
        sc.mount(source, target, None, sc.MS_BIND | sc.MS_REC)
        if item.readonly:
            sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _statvfs_flags(target))
    finally:
        sc.umount2(merged, sc.MNT_DETACH)


def _parse_options(options: tuple[str, ...]) -> tuple[int, list[str]]:
    flags, data = 0, []
    for option in options:
        if option in FLAG_OPTIONS:
            flags |= FLAG_OPTIONS[option]
        elif option not in ("rw", "bind", "rbind", "rprivate", "private"):
            data.append(option)
    return flags, data


def _statvfs_flags(path: str) -> int:
    result = os.statvfs(path).f_flag
    return ((sc.MS_NOSUID if result & os.ST_NOSUID else 0) | (sc.MS_NODEV if result & os.ST_NODEV else 0)
            | (sc.MS_NOEXEC if result & os.ST_NOEXEC else 0) | (sc.MS_RDONLY if result & os.ST_RDONLY else 0))


def pivot_into(root: str) -> None:
    """Make `root` the root of this mount namespace and drop the old one (buildah/runc's sequence)."""
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        # pivot_root(".", ".") stacks the old root on top of the new one: no put_old directory is
        # needed in the image, so the layer stays untouched.
        os.fchdir(new)
        sc.pivot_root(".", ".")
        # "." is now the old root (kernel behaviour, not a promise): step onto it by descriptor.
        os.fchdir(old)
        # Slave, so the detach below cannot propagate anywhere even if a mount was shared.
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
    finally:
        os.close(old)
        os.close(new)
    os.chdir("/")


def unmount_stub_targets(rootfs: Rootfs) -> None:
    """After the command: detach whatever sits on a stub (deepest first) so the stubs can go."""
    for path in sorted(rootfs.stub_mounts, key=len, reverse=True):
        try:
            sc.umount2(path, sc.MNT_DETACH)
        except OSError:
            pass  # the command may have unmounted it itself
