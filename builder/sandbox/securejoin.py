"""Path resolution scoped to a root directory, as if the root were `/` (Go's securejoin, used by BuildKit
and buildah): `..` stops at the root and symlinks, absolute or relative, are followed inside it, so the
result never names a file outside the root whatever the symlinks say.

The one implementation for the build context, COPY/ADD destinations in a stage's root and the sandbox's
mount points, and (with `resolve_in_root`'s hook) for what a .dockerignore leaves of a context path
(builder/context/visible.py); it lives here because the sandbox may import only itself and the standard library.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Callable

MAX_SYMLINKS = 255


def scoped_join(root: str, path: str, *, follow_last: bool = True) -> str:
    """The host path of `path` inside `root`, following symlinks within root (the final one only if
    `follow_last`). Missing components are kept literally; more than MAX_SYMLINKS links raise ELOOP."""
    parts = resolve_in_root(root, path, follow_last=follow_last)
    assert parts is not None  # keep_missing: a missing component is kept, never an answer of None
    return os.path.join(root, *parts)


def resolve_in_root(root: str, path: str, *, follow_last: bool = True, keep_missing: bool = True,
                    through: Callable[[str], bool] | None = None) -> list[str] | None:
    """The components `path` names inside `root` once `..` stops at the root and symlinks are followed inside
    it (the final one only if `follow_last`). A missing component is kept literally when `keep_missing`, else
    the answer is None; so is it when `through(link)`, asked with each symlink's root-relative path before it
    is followed, says False. More than MAX_SYMLINKS links raise ELOOP."""
    pending = [p for p in path.split("/") if p not in ("", ".")]
    pending.reverse()
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if not pending and not follow_last:
            resolved.append(part)
            break
        try:
            st = os.lstat(candidate)
        except OSError:
            if not keep_missing:
                return None
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        if through is not None and not through("/".join([*resolved, part])):
            return None
        hops += 1
        if hops > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
    return resolved
