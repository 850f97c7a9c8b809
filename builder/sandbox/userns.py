"""Is this process in a user namespace other than the initial one (pybuild's rootless mode, builder/rootless.py)?

There the kernel refuses what needs CAP_SYS_ADMIN in the initial namespace: trusted.* xattrs (overlay then uses
`userxattr` and user.overlay.*), cgroups that were not delegated, mounting sysfs without a network namespace of
its own, devpts' gid= for an unmapped group.
"""
from __future__ import annotations

import functools

INITIAL_MAP = ("0", "0", "4294967295")


@functools.lru_cache(maxsize=1)
def in_user_namespace() -> bool:
    """True unless /proc/self/uid_map is the initial namespace's identity map of every id."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as handle:
            lines = handle.read().split("\n")
    except OSError:
        return False
    return [tuple(line.split()) for line in lines if line.strip()] != [INITIAL_MAP]


def gid_mapped(gid: int) -> bool:
    """Does /proc/self/gid_map map this group id (inside)?"""
    try:
        with open("/proc/self/gid_map", encoding="ascii") as handle:
            rows = [tuple(int(v) for v in line.split()) for line in handle if line.strip()]
    except OSError:
        return True
    return any(inside <= gid < inside + count for inside, _, count in rows)


def overlay_xattr_prefix() -> str:
    """Where overlayfs keeps its own xattrs (opaque, redirect, ...): user.overlay. under `userxattr`."""
    return "user.overlay." if in_user_namespace() else "trusted.overlay."


@functools.lru_cache(maxsize=1)
def setgroups_denied() -> bool:
    """A single-id user namespace (rootless without subordinate ids) denies setgroups(2)."""
    try:
        with open("/proc/self/setgroups", encoding="ascii") as handle:
            return handle.read().strip() == "deny"
    except OSError:
        return False
