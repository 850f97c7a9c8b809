"""Path resolution scoped to a root: the build context, or a stage's root filesystem.

`scoped_join` (from builder.sandbox.securejoin, the one implementation) resolves a path as if `root` were `/`:
`..` stops at the root and symlinks are followed inside it, like Go's securejoin that BuildKit and buildah use.
"""
from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from functools import lru_cache

from builder.sandbox.securejoin import scoped_join

__all__ = ["clean", "expand_glob", "has_glob", "scoped_join"]


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
