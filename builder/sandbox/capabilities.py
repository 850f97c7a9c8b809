"""Capabilities of the command: docker's default set, nothing more.

Stage 1 and PID 1 keep every capability (they mount things); the command's process drops the
rest from its bounding set just before execve. For uid 0 execve then grants exactly the bounding
set; other users get none (and setuid binaries at most the bounding set), as under docker.
Without CAP_SYS_ADMIN a RUN cannot mount, unshare or pivot back out; device nodes it creates
with CAP_MKNOD cannot be opened because the root and /dev are mounted nodev (the devices
cgroup does that job for docker).
"""
from __future__ import annotations

from builder.sandbox import syscalls as sc

# moby/containerd's default capability set (oci/caps defaults), by number (linux/capability.h).
DEFAULT_CAPABILITIES = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31,
}
CAP_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"


def last_capability() -> int:
    """The highest capability number this kernel knows (read before pivot_root hides the host)."""
    with open(CAP_LAST_CAP_FILE, encoding="ascii") as handle:
        return int(handle.read().strip())


def restrict_bounding_set(keep: set[int], last: int) -> None:
    """Drop every capability not in `keep` from the bounding set; clear the inheritable and ambient
    sets (root's execve would otherwise pass inheritable capabilities on past the bounding set)."""
    sc.clear_inheritable_capabilities()
    for cap in range(last + 1):
        if cap not in keep:
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
    try:
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set: nothing to clear
