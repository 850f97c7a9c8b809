"""--snapshotter auto|overlayfs|fuse-overlayfs: how layer stacks are mounted (BuildKit's --oci-worker-snapshotter).

`overlayfs` is the kernel's (with `userxattr` in rootless mode's user namespace); `fuse-overlayfs` is the FUSE
daemon from Debian's package (builder/sandbox/fuse.py). `auto` (the default) is overlayfs, except in rootless mode
where the kernel refuses an overlay mount in the user namespace: then fuse-overlayfs, as rootless BuildKit and
podman fall back. The choice is made once per process, at the first mount that needs it (a fully cached rebuild
never probes), and rootless mode says once which one is in use.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading

from builder import rootless
from builder.errors import UsageError

CHOICES = ("auto", "overlayfs", "fuse-overlayfs")
KERNEL, FUSE = "overlayfs", "fuse-overlayfs"
_state: dict[str, str] = {"requested": "auto"}
_lock = threading.Lock()


def request(name: str) -> None:
    """Record the --snapshotter given on the command line (before any build step runs)."""
    with _lock:
        _state.clear()
        _state["requested"] = name


def current(probe_dir: str | os.PathLike | None = None) -> str:
    """KERNEL or FUSE for this process; `probe_dir` (the store's) is where auto tries a kernel overlay mount."""
    with _lock:
        if "resolved" not in _state:
            _state["resolved"] = _resolve(_state["requested"], probe_dir)
            if rootless.entered():
                how = "kernel overlayfs (userxattr)" if _state["resolved"] == KERNEL else "fuse-overlayfs"
                print(f"notice: rootless mode: layers are mounted with {how}", file=sys.stderr)
        return _state["resolved"]


def _resolve(requested: str, probe_dir: str | os.PathLike | None) -> str:
    if requested == FUSE and shutil.which("fuse-overlayfs") is None:
        raise UsageError("--snapshotter fuse-overlayfs: fuse-overlayfs is not installed",
                         hint="apt-get install fuse-overlayfs, or use --snapshotter overlayfs")
    if requested != "auto":
        return requested
    if not rootless.entered():
        return KERNEL
    refusal = kernel_refusal(probe_dir)
    if refusal is None:
        return KERNEL
    if shutil.which("fuse-overlayfs") is None:
        raise UsageError(f"rootless mode: the kernel refuses overlayfs in the user namespace ({refusal}) and "
                         "fuse-overlayfs is not installed", hint="apt-get install fuse-overlayfs, or run as root")
    return FUSE


def kernel_refusal(probe_dir: str | os.PathLike | None) -> str | None:
    """None if a kernel overlay (userxattr) mounts here, in this process's mount namespace; else the reason."""
    from builder.sandbox import syscalls as sc  # lazy: saves ~4 ms at start-up

    base = tempfile.mkdtemp(prefix="overlay-probe-", dir=probe_dir)
    try:
        dirs = {name: os.path.join(base, name) for name in ("lower", "upper", "work", "merged")}
        for path in dirs.values():
            os.mkdir(path)
        try:
            sc.mount("overlay", dirs["merged"], "overlay", sc.MS_NODEV,
                     sc.overlay_options([dirs["lower"]], dirs["upper"], dirs["work"]))
        except OSError as exc:
            return os.strerror(exc.errno) if exc.errno else str(exc)
        sc.umount2(dirs["merged"], sc.MNT_DETACH)
        return None
    finally:
        shutil.rmtree(base, ignore_errors=True)


def settle(mutable) -> None:
    """Before a commit: a fuse-overlayfs upper rewritten in the kernel's format (builder/sandbox/fuse.py)."""
    if _state.get("resolved") == FUSE:
        from builder.sandbox.fuse import normalise_upper  # lazy: saves ~5 ms at start-up

        normalise_upper(str(mutable.upper), [str(p) for p in mutable.lowerdirs])
