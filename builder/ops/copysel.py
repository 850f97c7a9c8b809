"""Which files a COPY/ADD takes (run in the file-op helper): source globs, `--exclude` patterns relative to each
copied source (as fsutil's copy matches them) together with .dockerignore, and `--parents` with the `/./` pivot
(the source's path after the pivot is kept under the destination, its directories copied with their metadata)."""
from __future__ import annotations

import os
import stat

from builder.context.paths import clean, expand_glob, has_glob, scoped_join


class FileOpError(Exception):
    """A COPY/ADD that cannot be done (the helper reports it as the step's error)."""


class Excluder:
    """.dockerignore (paths relative to the context) and COPY --exclude (relative to the source being copied, as
    fsutil's copy matches them; the source itself is never excluded) as one matcher for Copier."""

    def __init__(self, ignore, exclude, base: str) -> None:
        self.ignore, self.exclude, self.base = ignore, exclude, base

    def _sub(self, rel: str) -> str:
        return rel[len(self.base) + 1:] if self.base and rel.startswith(self.base + "/") else \
            ("" if rel == self.base else rel)

    def matches(self, rel: str) -> bool:
        if self.ignore is not None and self.ignore(rel):
            return True
        sub = self._sub(rel)
        return bool(sub) and self.exclude is not None and self.exclude.matches(sub)

    def could_match_inside(self, rel: str) -> bool:
        """Descend into an excluded directory only when every matcher excluding it could re-include below."""
        ok = True
        if self.ignore is not None and self.ignore(rel):
            could = getattr(getattr(self.ignore, "__self__", None), "could_match_inside", None)
            ok = could is not None and could(rel)
        sub = self._sub(rel)
        if ok and sub and self.exclude is not None and self.exclude.matches(sub):
            ok = self.exclude.could_match_inside(sub)
        return ok


def split_pivot(pattern: str) -> tuple[str, str]:
    """COPY --parents as BuildKit's normalizeParentPath: (source root, pattern kept below it), split at the first
    `/./`; without one the root is the context's (or stage's) and the whole path is kept."""
    head, sep, tail = pattern.partition("/./")
    return (clean(head), clean(tail)) if sep else ("", clean(pattern))


def key_pattern(source: str, parents: bool) -> str:
    """What a source's cache-key checksum covers: with --parents and `**`, its whole source root."""
    if not parents or "**" not in source:
        return source
    return split_pivot(source)[0] or "."


def _parents_matches(src_root: str, pattern: str) -> list[tuple[str, str]]:
    head, tail = split_pivot(pattern)
    out: list[tuple[str, str]] = []
    for base in expand_glob(src_root, head) if head else [""]:
        if "**" in tail:  # BuildKit's IncludePatterns: `**` spans directories
            out.extend(_included(src_root, base, tail))
            continue
        skip = len(base.split("/")) if base else 0  # one component per glob component: cut the root off
        out.extend((m, "/".join(m.split("/")[skip:])) for m in expand_glob(src_root, f"{base}/{tail}" if base else
                                                                             tail or "."))
    return out


def _included(src_root: str, base: str, pattern: str) -> list[tuple[str, str]]:
    """(root-relative path, path below base) of what `pattern` includes below `base` (a matched directory whole);
    symlinks are not followed."""
    from builder.context.dockerignore import PatternMatcher  # lazy: saves ~18 ms at start-up

    matcher = PatternMatcher([pattern])
    out: list[tuple[str, str]] = []

    def walk(host: str, rel: str) -> None:
        with os.scandir(host) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            if matcher.matches(child):
                out.append((f"{base}/{child}" if base else child, child))
            elif entry.is_dir(follow_symlinks=False):
                walk(entry.path, child)

    top = scoped_join(src_root, base)
    if os.path.isdir(top):
        walk(top, "")
    return out


def select_sources(op: dict, src_root: str, excluded) -> list[tuple[str, str, str]]:
    """(root-relative match, path kept under dest with --parents, the context path it resolves to) for every
    source pattern. With a .dockerignore, what it removes does not exist, nor what a symlink reaches in it
    (builder/context/visible.py)."""
    matches: list[tuple[str, str, str]] = []
    for pattern in op["sources"]:
        found = _parents_matches(src_root, pattern) if op.get("parents") else \
            [(m, m) for m in expand_glob(src_root, pattern)]
        real = {m: m for m, _ in found}
        if excluded is not None:
            from builder.context.visible import visible_rel  # lazy: saves ~21 ms at start-up

            real = {m: r for m, _ in found if (r := visible_rel(src_root, m, excluded)) is not None}
        found = [(m, kept) for m, kept in found if m in real and os.path.lexists(scoped_join(src_root, m))]
        if not found:
            if has_glob(pattern):
                continue  # BuildKit's AllowEmptyWildcard: a wildcard that matches nothing copies nothing
            raise FileOpError(f"source {pattern!r} not found in {op.get('source_name', 'the build context')}")
        matches.extend((m, kept, real[m]) for m, kept in found)
    return matches


def copy_parents(copier, src_root: str, rel: str, kept: str, dest: str) -> str:
    """Make dest/<dirs of kept> as copies of the source's directories (mode, owner, times); the target path."""
    dirs = kept.split("/")[:-1]
    src_base = rel[: len(rel) - len(kept)].rstrip("/") if kept else rel
    for depth in range(1, len(dirs) + 1):
        image_dir = f"{dest.rstrip('/')}/{'/'.join(dirs[:depth])}"
        if os.path.isdir(copier.host(image_dir, follow_last=True)):
            continue
        src_dir = "/".join(filter(None, [src_base, *dirs[:depth]]))
        st = os.stat(scoped_join(src_root, src_dir))
        copier.mkdirs(os.path.dirname(image_dir))
        host = copier.host(image_dir)
        os.mkdir(host)
        os.chmod(host, stat.S_IMODE(st.st_mode))
        copier._chown(host, st.st_uid, st.st_gid)
        os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))
    return f"{dest.rstrip('/')}/{kept}" if kept else dest


def excluded_sums(root: str, action, ignore, digests) -> dict[str, str | None]:
    """Content checksums of a COPY --exclude action's sources without the excluded files (its cache-key input),
    keyed by pattern and patterns, so the same source with other --exclude patterns is another input."""
    # lazy: saves ~62 ms at start-up
    from builder.context.checksum import checksum_sources
    from builder.context.dockerignore import PatternMatcher

    exclude = PatternMatcher(list(action.excludes))
    sums = checksum_sources(root, [key_pattern(s, action.parents) for s in action.sources], ignore, digests=digests,
                            per_source=lambda rel: Excluder(ignore, exclude, rel).matches)
    suffix = " --exclude=" + ",".join(action.excludes)
    return {pattern + suffix if value is not None else pattern: value for pattern, value in sums.items()}
