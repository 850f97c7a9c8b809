"""Linux system calls Python 3.11 lacks (os.unshare/os.setns arrived in 3.12), through ctypes.

Only the sandbox's freshly exec'd helper processes call the namespace-changing ones; the threaded
builder process never does (STYLE.md habit 8).
"""
from __future__ import annotations

import ctypes
import errno
import os

from builder.sandbox.userns import in_user_namespace

# The interpreter's own symbols include libc's; ctypes.util.find_library would cost these helpers
# ~35 ms of start-up (it imports subprocess, shutil and re to search the library path).
_libc = ctypes.CDLL(None, use_errno=True)


def _declare(name: str, restype: type | None, *argtypes: type) -> None:
    """Give libc's ``name`` its C signature: ctypes then converts and checks each argument (it would pass any
    Python int as a C int and read an int back)."""
    function = getattr(_libc, name)
    function.restype = restype
    function.argtypes = argtypes


_declare("unshare", ctypes.c_int, ctypes.c_int)
_declare("setns", ctypes.c_int, ctypes.c_int, ctypes.c_int)
_declare("mount", ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_declare("umount2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
_declare("syscall", ctypes.c_long, ctypes.c_long, ctypes.c_char_p, ctypes.c_char_p)  # pivot_root's only
_declare("sethostname", ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_declare("prctl", ctypes.c_int, ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24

MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# pivot_root has no libc wrapper: its number per machine (uname -m), from each architecture's syscall table
# (arm64, riscv64 and loongarch64 share asm-generic/unistd.h's)
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41, "i686": 217, "i386": 217,
                   "armv7l": 218, "armv6l": 218, "ppc64le": 203, "ppc64": 203, "s390x": 217, "mips64": 5151}
_SYS_SETHOSTNAME_NAME = "sethostname"


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {fstype or ''} {source or ''} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root_number(machine: str) -> int:
    """pivot_root's system call number on ``machine``; OSError(ENOSYS) for a machine the table lacks."""
    number = _SYS_PIVOT_ROOT.get(machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: no system call number known for machine {machine!r} "
                                    "(builder/sandbox/syscalls.py)")
    return number


def pivot_root(new_root: str, put_old: str) -> None:
    number = pivot_root_number(os.uname().machine)
    result = _libc.syscall(ctypes.c_long(number), os.fsencode(new_root), os.fsencode(put_old))
    _check(result, f"pivot_root {new_root}")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option: int, arg2: int = 0) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), 0, 0, 0), "prctl")


def make_mounts_private() -> None:
    """Stop mount events propagating back to the host (call right after unshare(CLONE_NEWNS))."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def overlay_options(lowerdirs: list[str], upperdir: str | None, workdir: str | None) -> str:
    """The overlay mount data string; lowerdirs top-most first. Colons/commas in paths are escaped."""

    def esc(p: str) -> str:
        return p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")

    parts = ["lowerdir=" + ":".join(esc(p) for p in lowerdirs)]
    if upperdir is not None:
        parts += [f"upperdir={esc(upperdir)}", f"workdir={esc(workdir or '')}"]
    if in_user_namespace():
        parts.append("userxattr")  # rootless: overlay's own xattrs are user.overlay.* (trusted.* needs init-ns root)
    return ",".join(parts)


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_declare("capget", ctypes.c_int, ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))
_declare("capset", ctypes.c_int, ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))


def clear_inheritable_capabilities() -> None:
    """Empty this thread's inheritable capability set (effective and permitted stay as they are)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for half in data:
        half.inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")


PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_prctl_pointer = _libc["prctl"]  # its own function object: the argtypes below are for this use only
_prctl_pointer.restype = ctypes.c_int
_prctl_pointer.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


def set_no_new_privs() -> None:
    """execve can no longer grant privileges (setuid bits, file capabilities) to this process and its children."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_seccomp_filter(program: bytes) -> None:
    """Install a BPF program (struct sock_filter[], 8 bytes each) as this thread's seccomp filter."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _check(_prctl_pointer(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")


def mount_overlay_volatile(target: str, flags: int, options: str, work: str) -> None:
    """overlay on `target`, `volatile` where the kernel has it (5.10+, else as asked): its unmount syncs nothing
    (a non-volatile overlay's teardown runs syncfs on the whole upper filesystem, 3-30 ms here on the step's
    clock, and writes other programs' dirty data too) and fsync in it is a no-op; the store syncs a snapshot's
    files when it commits it (cache.durable.SyncFs), as before the index calls it ready.

    The kernel marks a work dir mounted volatile (work/incompat/volatile) and refuses it afterwards, since it
    cannot know that the mount ended cleanly. Callers only mount a step's own temp upper again after its previous
    mount is gone (the store drops the temp uppers of a crashed build: SnapshotStore.recover), so the mark goes."""
    marker = os.path.join(work, "work", "incompat", "volatile")
    if os.path.lexists(marker):
        import shutil  # lazy: saves ~2 ms at start-up (the init and file-op helpers import this module)

        shutil.rmtree(marker, ignore_errors=True)
    try:
        mount("overlay", target, "overlay", flags, options + ",volatile")
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        mount("overlay", target, "overlay", flags, options)
