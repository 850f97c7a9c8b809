"""Path resolution scoped to a root: the build context, or a stage's root filesystem.

`scoped_join` resolves a path as if `root` were `/`: `..` stops at the root and symlinks (absolute or relative)
are followed inside it, like Go's securejoin that BuildKit and buildah use. A path can therefore never name a file
outside the root, whatever the symlinks say.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import posixpath
import re
import stat
from functools import lru_cache

MAX_SYMLINKS = 255


def clean(path: str) -> str:
    """posix-clean an absolute-or-relative path into a root-relative one without `..` escapes ('' = root)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def scoped_join(root: str, path: str, *, follow_last: bool = True) -> str:
    """The host path of `path` inside `root`, following symlinks within root (final one only if follow_last)."""
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
            resolved.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
    return os.path.join(root, *resolved)


def has_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


@lru_cache(maxsize=256)
def _compile(part: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(part))


def expand_glob(root: str, pattern: str) -> list[str]:
    """Root-relative paths matching `pattern` (Go filepath.Match per component, `*` not crossing `/`), sorted.

    Without wildcards this is the cleaned path itself (whether or not it exists). Wildcard components are matched
    against the directory listing; intermediate symlinks are resolved within the root.
    """
    cleaned = clean(pattern)
    if not has_glob(cleaned):
        return [cleaned]
    matches = [""]
    for part in cleaned.split("/"):
        nxt: list[str] = []
        for base in matches:
            if not has_glob(part):
                nxt.append(posixpath.join(base, part) if base else part)
                continue
            directory = scoped_join(root, base)
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            regex = _compile(part)
            nxt.extend(posixpath.join(base, n) if base else n for n in names if regex.fullmatch(n))
        matches = nxt
    return sorted(m for m in matches if os.path.lexists(scoped_join(root, m, follow_last=False)))
