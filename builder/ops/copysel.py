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


def _pivot_base(pattern: str) -> str | None:
    """COPY --parents: the root-relative directory before the first `/./` (what is not kept), or None."""
    head, sep, _ = pattern.partition("/./")
    return clean(head) if sep else None


def select_sources(op: dict, src_root: str, excluded) -> list[tuple[str, str]]:
    """(root-relative match, path kept under dest with --parents) for every source pattern."""
    matches: list[tuple[str, str]] = []
    for pattern in op["sources"]:
        found = expand_glob(src_root, pattern)
        found = [m for m in found if os.path.lexists(scoped_join(src_root, m))
                 and not (excluded is not None and m and excluded(m))]
        if not found:
            if has_glob(pattern):
                continue  # BuildKit's AllowEmptyWildcard: a wildcard that matches nothing copies nothing
            raise FileOpError(f"source {pattern!r} not found in {op.get('source_name', 'the build context')}")
        base = _pivot_base(pattern) if op.get("parents") else None
        matches.extend((m, m[len(base) + 1:] if base and m.startswith(base + "/") else
                        ("" if base == m else m)) for m in found)
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
    from builder.context.checksum import checksum_sources
    from builder.context.dockerignore import PatternMatcher

    exclude = PatternMatcher(list(action.excludes))
    sums = checksum_sources(root, list(action.sources), ignore, digests=digests,
                            per_source=lambda rel: Excluder(ignore, exclude, rel).matches)
    suffix = " --exclude=" + ",".join(action.excludes)
    return {pattern + suffix if value is not None else pattern: value for pattern, value in sums.items()}
