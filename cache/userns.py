"""Where overlayfs keeps its xattrs: trusted.overlay.*, or user.overlay.* in a user namespace (rootless mode).

In a user namespace other than the initial one (pybuild's rootless mode) trusted.* xattrs need CAP_SYS_ADMIN of
the initial namespace, so the overlay is mounted with `userxattr` and marks opaque directories with
user.overlay.opaque; the unpacker and the layer writer follow (a store is only ever used in one mode: its owner).
"""
from __future__ import annotations

import functools

OVERLAY_XATTR_PREFIX = "trusted.overlay."
USER_OVERLAY_XATTR_PREFIX = "user.overlay."
INITIAL_UID_MAP = ["0 0 4294967295"]


@functools.lru_cache(maxsize=1)
def overlay_prefix() -> str:
    """OVERLAY_XATTR_PREFIX, or USER_OVERLAY_XATTR_PREFIX when /proc/self/uid_map is not the initial identity."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as handle:
            rows = [" ".join(line.split()) for line in handle if line.strip()]
    except OSError:
        return OVERLAY_XATTR_PREFIX
    return OVERLAY_XATTR_PREFIX if rows == INITIAL_UID_MAP else USER_OVERLAY_XATTR_PREFIX


def in_user_namespace() -> bool:
    """Rootless mode: not the initial user namespace."""
    return overlay_prefix() == USER_OVERLAY_XATTR_PREFIX
