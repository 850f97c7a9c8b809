"""Content checksums of COPY/ADD sources, as BuildKit's contenthash: names, types, modes, symlink targets and
file contents — never mtimes, owners or the context's own location, so `touch` or a fresh checkout of the same
tree hits the cache.

The walk comes first: each source's entries are listed in canonical order (names sorted per directory), then
the digests of all regular files are asked for in one bulk call (the store answers unchanged files from its
stat memo with one query and reads the rest on a few threads), then each listing is hashed in the same order.
The values are those of a walk that hashed each file as it reached it.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence

from builder.context.dockerignore import Excluded, visit
from builder.context.paths import expand_glob, scoped_join
from builder.context.visible import visible_rel
from cache.statcache import hash_files

Digester = Callable[[str], str]
BulkDigester = Callable[[Sequence[tuple[str, os.stat_result]]], Sequence[str]]
# one entry of a listing: its finished text, or (text before the digest, path) for a regular file
Line = str | tuple[str, str]
_CHUNK = 1 << 20


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(items: Sequence[tuple[str, os.stat_result]]) -> list[str]:
    """`file_digest` of each (path, stat), read on a few threads, without a memo."""
    return [digest.hex for digest, _ in hash_files(items)]


def _per_file(digest: Digester) -> BulkDigester:
    return lambda items: [digest(path) for path, _ in items]


def _line(name: str, path: str, st: os.stat_result) -> Line:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return f"L {name} {os.readlink(path)}\0"
    if stat.S_ISDIR(mode):
        return f"D {name} {stat.S_IMODE(mode):o}\0"
    if stat.S_ISREG(mode):
        return f"F {name} {stat.S_IMODE(mode):o} ", path
    return f"S {name} {stat.S_IFMT(mode):o} {stat.S_IMODE(mode):o}\0"


def _walk(lines: list[Line], files: dict[str, os.stat_result], root_rel: str, host: str,
          excluded: Excluded | None) -> None:
    with os.scandir(host) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        rel = f"{root_rel}/{entry.name}" if root_rel else entry.name
        st = entry.stat(follow_symlinks=False)
        include, descend = visit(excluded, rel, stat.S_ISDIR(st.st_mode))
        if include:
            lines.append(_line(rel, entry.path, st))
            if stat.S_ISREG(st.st_mode):
                files.setdefault(entry.path, st)
        if descend:
            _walk(lines, files, rel, entry.path, excluded)


def _listing(root: str, rel: str, excluded: Excluded | None, files: dict[str, os.stat_result]) -> list[Line]:
    """The entries of one source in checksum order; its regular files are added to `files` (path → stat)."""
    host = scoped_join(root, rel)
    st = os.stat(host)
    lines = [_line(".", host, st)]
    if stat.S_ISREG(st.st_mode):
        files.setdefault(host, st)
    elif stat.S_ISDIR(st.st_mode):
        _walk(lines, files, rel, host, excluded)
    return lines


def _hash(lines: list[Line], digests: dict[str, str]) -> str:
    text = "".join(line if isinstance(line, str) else f"{line[0]}{digests[line[1]]}\0" for line in lines)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _bulk(digest: Digester | None, digests: BulkDigester | None) -> BulkDigester:
    return digests or (_per_file(digest) if digest is not None else file_digests)


MAX_ENTRIES = 2000  # files listed for --explain-cache per step: a bigger source is described by its checksum alone


def _entries(listings: dict[str, list[tuple[str, list[Line]]]], sums: dict[str, str], out: dict[str, str]) -> None:
    """Context path → its hashed line (the file's content digest in place of the path to hash)."""
    found: dict[str, str] = {}
    for listing in listings.values():
        for rel, lines in listing:
            for line in lines:
                text = line if isinstance(line, str) else f"{line[0]}{sums[line[1]][:19]}"
                kind, name, rest = text.rstrip("\0").split(" ", 2) if text.count(" ") >= 2 else (text, "", "")
                found[rel if name == "." else name] = f"{kind} {rest}"
                if len(found) > MAX_ENTRIES:
                    return
    out.update(found)


def source_checksum(root: str, rel: str, excluded: Excluded | None = None, digest: Digester | None = None,
                    *, digests: BulkDigester | None = None) -> str:
    """Checksum of one resolved source (a file, symlink-followed path or directory tree) in the context."""
    files: dict[str, os.stat_result] = {}
    lines = _listing(root, rel, excluded, files)
    return _hash(lines, dict(zip(files, _bulk(digest, digests)(list(files.items())))))


def checksum_sources(root: str, patterns: list[str], excluded: Excluded | None = None,
                     digest: Digester | None = None, *, digests: BulkDigester | None = None,
                     per_source: Callable[[str], Excluded] | None = None,
                     entries: dict[str, str] | None = None) -> dict[str, str | None]:
    """pattern → checksum of everything it matches (None when it matches nothing).

    File contents are hashed by `digests(items)`, called once with every regular file (path, lstat) the
    patterns reach, or else per file by `digest(path)`; the default reads them on a few threads. The solver
    passes the store's stat-memoised bulk digester, so an unchanged context is re-checked without reading
    file contents. `per_source(rel)` gives the matcher for the tree below each matched source (COPY --exclude).
    `entries`, when given, receives context path → what was hashed of it (kind, mode, content digest or link
    target), for --explain-cache to name the files that changed; at most MAX_ENTRIES, else none at all."""
    files: dict[str, os.stat_result] = {}
    listings: dict[str, list[tuple[str, list[Line]]]] = {}
    for pattern in patterns:
        real = {m: m for m in expand_glob(root, pattern)}
        if excluded is not None:  # as the copy sees the context: builder/context/visible.py
            real = {m: r for m in real if (r := visible_rel(root, m, excluded)) is not None}
        matches = [m for m in real if os.path.exists(scoped_join(root, m))]
        listings[pattern] = [(rel, _listing(root, real[rel], per_source(rel) if per_source else excluded, files))
                             for rel in matches]
    sums = dict(zip(files, _bulk(digest, digests)(list(files.items()))))
    if entries is not None:
        _entries(listings, sums, entries)
    out: dict[str, str | None] = {}
    for pattern, listing in listings.items():
        if not listing:
            out[pattern] = None
            continue
        h = hashlib.sha256()
        for rel, lines in listing:
            # a name that is not UTF-8 is hashed as its own bytes (os.fsdecode's surrogates back to them)
            h.update(f"{rel}\0{_hash(lines, sums)}\0".encode("utf-8", "surrogateescape"))
        out[pattern] = h.hexdigest()
    return out
