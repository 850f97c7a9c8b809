"""Content checksums of COPY/ADD sources, as BuildKit's contenthash: names, types, modes, symlink targets and
file contents — never mtimes, owners or the context's own location, so `touch` or a fresh checkout of the same
tree hits the cache.
"""
from __future__ import annotations

import hashlib
import os
import stat
from typing import Callable

from builder.context.paths import expand_glob, scoped_join

Excluded = Callable[[str], bool]
Digester = Callable[[str], str]
_CHUNK = 1 << 20


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _entry(h: "hashlib._Hash", name: str, path: str, st: os.stat_result, digest: Digester) -> None:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        h.update(f"L {name} {os.readlink(path)}\0".encode())
    elif stat.S_ISDIR(mode):
        h.update(f"D {name} {stat.S_IMODE(mode):o}\0".encode())
    elif stat.S_ISREG(mode):
        h.update(f"F {name} {stat.S_IMODE(mode):o} {digest(path)}\0".encode())
    else:
        h.update(f"S {name} {stat.S_IFMT(mode):o} {stat.S_IMODE(mode):o}\0".encode())


def visit(excluded: Excluded | None, rel: str, is_dir: bool) -> tuple[bool, bool]:
    """(include the entry, descend into it) for a .dockerignore'd walk: an excluded directory is still entered
    when an exception (`!pattern`) could re-include something inside it (fsutil's rule)."""
    if excluded is None or not excluded(rel):
        return True, is_dir
    matcher = getattr(excluded, "__self__", None)
    could = getattr(matcher, "could_match_inside", None)
    return False, bool(is_dir and could is not None and could(rel))


def _walk(h: "hashlib._Hash", root_rel: str, host: str, excluded: Excluded | None, digest: Digester) -> None:
    with os.scandir(host) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = f"{root_rel}/{entry.name}" if root_rel else entry.name
        st = entry.stat(follow_symlinks=False)
        include, descend = visit(excluded, rel, stat.S_ISDIR(st.st_mode))
        if include:
            _entry(h, rel, entry.path, st, digest)
        if descend:
            _walk(h, rel, entry.path, excluded, digest)


def source_checksum(root: str, rel: str, excluded: Excluded | None = None,
                    digest: Digester = file_digest) -> str:
    """Checksum of one resolved source (a file, symlink-followed path or directory tree) in the context."""
    h = hashlib.sha256()
    host = scoped_join(root, rel)
    st = os.stat(host)
    _entry(h, ".", host, st, digest)
    if stat.S_ISDIR(st.st_mode):
        _walk(h, rel, host, excluded, digest)
    return h.hexdigest()


def checksum_sources(root: str, patterns: list[str], excluded: Excluded | None = None,
                     digest: Digester = file_digest) -> dict[str, str | None]:
    """pattern → checksum of everything it matches (None when it matches nothing).

    `digest(path)` hashes one file's content; the solver passes the store's stat cache so an unchanged context
    is re-checked without reading file contents."""
    out: dict[str, str | None] = {}
    for pattern in patterns:
        matches = [m for m in expand_glob(root, pattern)
                   if os.path.exists(scoped_join(root, m)) and not (excluded and m and excluded(m))]
        if not matches:
            out[pattern] = None
            continue
        h = hashlib.sha256()
        for rel in matches:
            h.update(f"{rel}\0{source_checksum(root, rel, excluded, digest)}\0".encode())
        out[pattern] = h.hexdigest()
    return out
