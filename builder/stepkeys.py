"""A step's cache key from what it reads: its parent's key and, by kind, RUN --mount inputs and --add-host names,
a COPY --from or --link stage's key, the context files it copies (hashed, COPY --exclude'd ones left out) or the
bytes an ADD <url> downloaded (once per build, `Downloads`). The keys themselves are builder/plan/keys.py's."""
from __future__ import annotations

import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from builder.context.checksum import checksum_sources
from builder.context.paths import has_glob
from builder.errors import BuildCancelled, ContextError, PybuildError
from builder.ops.copysel import excluded_sums, key_pattern
from builder.plan.keys import CacheKey, step_key
from builder.plan.steps import FileOp, MergeOp, Step
from builder.progress.tasks import metered_digests

if TYPE_CHECKING:
    from builder.solve import Solver


def key_of(solver: Solver, step: Step) -> CacheKey:
    """The step's cache key, on its parent's (solved before it)."""
    parent_key = solver.results[step.parent].key.digest if step.parent is not None else None
    epoch = solver.options.source_date_epoch
    if isinstance(step.op, MergeOp):  # COPY --link: the linked layer's key on the parent's
        return step_key(step, parent_key, from_key=solver.results[step.op.layer_step].key.digest, epoch=epoch)
    if not isinstance(step.op, FileOp):
        # lazy: saves ~6 ms at start-up
        from builder.ops.mounts import mount_key_parts  # RUN --mount inputs (lead's part)
        mounts = mount_key_parts(step, solver.options.context_dir, solver.options.excluded,
                                 solver.store.file_digests, {k: r.key.digest for k, r in solver.results.items()})
        return step_key(step, parent_key, mounts=mounts, epoch=epoch,
                        hosts=sorted({name for name, _ in solver.options.extra_hosts}))
    if step.op.from_stage is not None:
        from_key = solver.results[step.op.from_step].key.digest if step.op.from_step is not None else "scratch"
        return step_key(step, parent_key, from_key=from_key, epoch=epoch)
    return _context_key(solver, step, parent_key)


def _context_key(solver: Solver, step: Step, parent_key: str | None) -> CacheKey:
    """COPY/ADD from the build context (or a URL): the key names every source file's content."""
    assert isinstance(step.op, FileOp)
    fetched = {a.url: solver.downloads.get(step, a) for a in step.op.actions if a.op == "fetch"}
    sums = _context_sums(solver, step)
    empty_ok = {p for a in step.op.actions for p in (key_pattern(s, a.parents) for s in a.sources)
                if has_glob(p)}  # BuildKit's AllowEmptyWildcard
    missing = [p for p, s in sums.items() if s is None and p not in empty_ok]
    if missing:
        from builder.ops.exec import render_location  # lazy: saves ~19 ms at start-up

        raise ContextError(
            f"{step.span}: {step.created_by}: source {missing[0]!r} not found in the build context",
            context=render_location(step, solver.options.dockerfile_lines),
            hint="paths are relative to the context directory; `..` and symlinks cannot leave it, and "
                 ".dockerignore may exclude the file")
    sums.update((url, f"{f.digest} {f.mtime}") for url, f in fetched.items())  # the bytes, not the URL alone
    return step_key(step, parent_key, sources={k: v for k, v in sums.items() if v is not None},
                    epoch=solver.options.source_date_epoch)


def _context_sums(solver: Solver, step: Step) -> dict[str, str | None]:
    """Source pattern → the digest of what it matches in the context (None: nothing), as the key records it."""
    assert isinstance(step.op, FileOp)
    patterns = [key_pattern(s, a.parents) for a in step.op.actions if not a.excludes for s in a.sources]
    context_dir = step.op.context_dir or solver.options.context_dir  # a named --build-context directory
    if patterns and context_dir is None:
        raise ContextError(f"{step.span}: {step.created_by}: no build context was given")
    excluded = None if step.op.context_dir else solver.options.excluded
    entries: dict[str, str] = {}
    meter = metered_digests(solver.store.file_digests, solver.sink, solver.numbers.get(step.id, 0))  # 0: no solve
    sums = checksum_sources(context_dir or "", patterns, excluded, digests=meter,
                            entries=entries) if patterns else {}
    if entries:
        solver.source_files[step.id] = entries  # for --explain-cache, kept in the step's cache record
    for action in (a for a in step.op.actions if a.excludes):  # COPY --exclude: excluded files are no input
        sums.update(excluded_sums(context_dir or "", action, excluded, solver.store.file_digests))
    return sums


class Downloads:
    """ADD <url>: each URL is downloaded once per build (the key needs the bytes' digest) into a temporary
    directory that close() removes; errors name the step."""

    def __init__(self, cancel: threading.Event, dockerfile_lines: list[str] | None) -> None:
        self.fetched: dict[str, Any] = {}  # URL → builder.context.remote.Fetched
        self._cancel = cancel
        self._lines = dockerfile_lines
        self._lock = threading.Lock()
        self._dir: str | None = None

    def get(self, step: Step, action: Any) -> Any:
        """The download of ``action.url`` (made now if it is the first), checked against ADD --checksum."""
        with self._lock:
            if action.url not in self.fetched:
                self.fetched[action.url] = self._download(step, action.url)
            found = self.fetched[action.url]
        if action.checksum and action.checksum != found.digest:
            raise PybuildError(f"{step.span}: {step.created_by}: {action.url} has content {found.digest}, but "
                               f"--checksum says {action.checksum}", reference="checksum-mismatch",
                               hint="the file changed on the server, or the checksum is wrong")
        return found

    def _download(self, step: Step, url: str) -> Any:
        from builder.context.remote import fetch  # lazy: saves ~2 ms at start-up

        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="pybuild-add-")
        try:
            return fetch(url, self._dir, cancelled=self._cancel.is_set)
        except BuildCancelled:
            raise
        except PybuildError as exc:
            from builder.ops.exec import render_location  # lazy: saves ~19 ms at start-up

            raise PybuildError(f"{step.span}: {step.created_by}: {exc.message}", hint=exc.hint,
                               context=render_location(step, self._lines), reference=exc.reference) from None

    def close(self) -> None:
        """Remove the downloads (the steps that copied them are done)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
