"""COPY and ADD (BuildKit's dispatchCopy): sources, destination, --from, --chown/--chmod, --exclude, --parents,
--link and ADD's --checksum/--unpack, planned into one FileOp step."""
from __future__ import annotations

import posixpath
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from builder.context.remote import is_git, is_url
from builder.errors import PybuildError
from builder.plan import dispatch as _d
from builder.plan.chmod import parse_chmod
from builder.plan.heredocs import copy_body
from builder.plan.steps import IMAGE_ROOT, FileAction, FileOp, HistoryItem, MergeOp
from grammar import nodes

if TYPE_CHECKING:
    from builder.plan.planner import Planner, StageState

shown = _d.shown


def dispatch_copy(p: "Planner", st: "StageState", inst: nodes.Copy) -> None:
    env = st.expand_env()
    sources = tuple(p.expand(s, env, inst.span) for s in inst.sources if not s.startswith("<<"))
    written = p.expand(inst.dest, env, inst.span)
    trailing = written.endswith("/") or written in (".", "") or written.endswith("/.")
    dest = posixpath.normpath(posixpath.join(st.config.workdir or "/", written))
    if trailing and not dest.endswith("/"):
        dest += "/"
    chown = inst.flag("chown")
    chmod = inst.flag("chmod")
    chown = p.expand(chown, env, inst.span) if chown else None
    chmod = p.expand(chmod, env, inst.span) if chmod else None
    if chmod is not None:
        try:
            parse_chmod(chmod)
        except ValueError:
            raise PybuildError(f"{_flag_span(inst, 'chmod')}: invalid --chmod value {chmod!r}", context=shown(inst),
                               hint="an octal mode such as 0755, or a symbolic one such as u=rwX,go=rX",
                               reference="invalid-chmod") from None
    is_add = isinstance(inst, nodes.Add)
    excludes, parents, unpack = _exclude_patterns(p, st, inst), _bool(inst, "parents"), _bool(inst, "unpack")
    actions = _fetches(p, st, inst, sources, dest, chown, chmod, unpack is True) if is_add else []
    local = tuple(s for s in sources if not is_url(s))
    if not is_add and len(local) < len(sources):
        raise PybuildError(f"{inst.span}: COPY does not take URLs ({next(s for s in sources if is_url(s))})",
                           hint="use ADD to download a file", context=shown(inst), reference="copy-url")
    if local:
        actions.append(FileAction(op="copy", sources=local, dest=dest, chown=chown, chmod=chmod,
                                  extract=is_add and unpack is not False, excludes=excludes, parents=bool(parents)))
    for doc in inst.heredocs:
        target = dest if not dest.endswith("/") else dest + doc.name
        actions.append(FileAction(op="write", dest=target, chown=chown, chmod=chmod,
                                  content=copy_body(doc, env, inst, shown(inst))))
    from_flag = inst.flag("from")
    op = FileOp(tuple(actions))
    if from_flag:
        op = _copy_from(p, st, inst, op, p.expand(from_flag, env, inst.span))
    name = "ADD" if is_add else "COPY"
    flags = " ".join(f"--{f.name}={f.value}" if f.value is not None else f"--{f.name}" for f in inst.flags
                     if f.name in ("chown", "chmod", "from", "exclude", "parents", "link", "unpack"))
    created_by = " ".join(x for x in (name, flags, *sources, written) if x)
    if _bool(inst, "link") and (chown is None or re.fullmatch(r"\d+(:\d+)?", chown)):
        _linked_step(p, st, inst, op, created_by)
    else:  # --chown=name needs the image's /etc/passwd: copied in place (the same files, no separate layer)
        _d._file_step(p, st, inst, op, created_by)


def _linked_step(p: "Planner", st: "StageState", inst: nodes.Copy, op: FileOp, created_by: str) -> None:
    """COPY --link: the copy is made on an empty root (its key ignores the parent), then merged on top."""
    deps = (op.from_step,) if op.from_step is not None else ()
    layer = p.graph.add(stage=st.index, kind="file", op=op, parent=None, span=inst.span,
                        created_by=created_by + " (linked layer)", deps=deps)
    merge = p.graph.add(stage=st.index, kind="merge", op=MergeOp(layer.id), parent=st.parent, span=inst.span,
                        created_by=created_by, deps=(layer.id,))
    st.parent = merge.id
    st.history.append(HistoryItem(created_by, merge.id))


def _flag_span(inst: nodes.Instruction, name: str) -> nodes.Span:
    return next((f.span for f in reversed(inst.flags) if f.name == name), inst.span)


def _bool(inst: nodes.Instruction, name: str) -> bool | None:
    """A boolean flag's value (`--name` alone is true), None when absent; grammar/flags.py checked the word."""
    value = inst.flag(name)
    return None if value is None else value.lower() != "false"


def _exclude_patterns(p: "Planner", st: "StageState", inst: nodes.Copy) -> tuple[str, ...]:
    """--exclude patterns, expanded, each checked as a .dockerignore-style pattern (BuildKit uses the same
    patternmatcher) and refused at its flag when malformed."""
    from builder.context.dockerignore import DockerignoreError, PatternMatcher  # lazy: saves ~11 ms at start-up

    patterns = []
    for flag in (f for f in inst.flags if f.name == "exclude"):
        pattern = p.expand(flag.value or "", st.expand_env(), flag.span)
        try:
            PatternMatcher([pattern])
        except DockerignoreError as exc:
            raise PybuildError(f"{flag.span}: --exclude={pattern}: {exc}", context=shown(inst),
                               hint="Go filepath.Match patterns: *, ?, [a-z], and ** for any directories",
                               reference="invalid-exclude") from None
        patterns.append(pattern)
    return tuple(patterns)


def _fetches(p: "Planner", st: "StageState", inst: nodes.Copy, sources, dest: str, chown, chmod,
             unpack: bool = False) -> list:
    """ADD <url>: one fetch per URL, saved (not unpacked) as dest, or under dest/ as the URL's last path segment
    (BuildKit's dockerfile2llb; "__unnamed__" when there is none)."""
    import urllib.parse  # lazy: saves ~3 ms at start-up

    urls = [s for s in sources if is_url(s) or is_git(s)]
    checksum = inst.flag("checksum")
    checksum = p.expand(checksum, st.expand_env(), inst.span) if checksum else ""
    if checksum and (len(urls) != 1 or len(sources) != 1):
        raise PybuildError(f"{inst.span}: ADD --checksum needs exactly one http(s) source", context=shown(inst),
                           reference="invalid-checksum")
    if checksum and not re.fullmatch(r"sha256:[0-9a-f]{64}", checksum):
        raise PybuildError(f"{inst.span}: ADD --checksum={checksum}: expected sha256:<64 hex digits>",
                           context=shown(inst), reference="invalid-checksum")
    if len(sources) > 1 and urls and not dest.endswith("/"):
        raise PybuildError(f"{inst.span}: when using ADD with more than one source file, the destination must be "
                           "a directory and end with a /", context=shown(inst), reference="invalid-dest")
    actions = []
    for url in urls:
        if is_git(url):
            raise PybuildError(f"{inst.span}: ADD {url}: git sources are not supported", context=shown(inst),
                               hint="clone in a RUN (with --mount=type=ssh for private repositories)",
                               reference="git-source")
        base = posixpath.basename(urllib.parse.urlsplit(url).path)
        actions.append(FileAction(op="fetch", url=url, name=base if base not in ("", ".", "/") else "__unnamed__",
                                  dest=dest, chown=chown, chmod=chmod, checksum=checksum, extract=unpack))
    return actions


def _copy_from(p: "Planner", st: "StageState", inst: nodes.Copy, op: FileOp, source: str) -> FileOp:
    """--from=<stage name or index>, else (as in BuildKit) an image reference: its root is the source."""
    index = int(source) if source.isdigit() else p._stage_ref(source)
    if index is None and not source.isdigit():
        try:
            step = p.image_root(source, st.index, inst.span)
        except PybuildError as exc:
            raise PybuildError(f"{inst.span}: COPY --from={source}: {exc.message}", hint=exc.hint or
                               "--from names a previous stage (FROM ... AS name), its index, or an image",
                               context=shown(inst), reference=exc.reference) from exc
        return replace(op, from_stage=IMAGE_ROOT, from_step=step)
    if index is None or index >= st.index:
        raise PybuildError(f"{inst.span}: COPY --from={source}: no such stage before this one",
                           hint="name a previous stage (FROM ... AS name) or its index",
                           context=shown(inst), reference="copy-from-unknown")
    src = p.graph.stages[index]
    return replace(op, from_stage=index, from_step=src.last_step)
