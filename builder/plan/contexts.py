"""Named build contexts, as buildx's `--build-context NAME=SOURCE`: the only way host paths reach a build.

SOURCE is a local directory, `oci-layout:///path[:tag|@sha256:...]` or `docker-image://REF`. `FROM NAME`,
`COPY --from=NAME` and `RUN --mount=...,from=NAME` resolve NAME to it, and a stage named NAME is replaced by it
(buildx: "when the Dockerfile defines a stage with the same name it is overwritten"). Names match as BuildKit's
dockerui.NamedContext does: in docker's familiar form, so `alpine`, `alpine:latest` and
`docker.io/library/alpine` are one name. A Dockerfile itself can name no host path (`FROM oci-layout://...`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from builder.errors import PybuildError, UsageError
from builder.plan.bases import OCI_LAYOUT_PREFIX, BaseImage, normalize_name, resolve_oci_layout
from builder.plan.imageconfig import ImageConfig
from builder.plan.steps import FileAction, FileOp
from grammar import nodes

if TYPE_CHECKING:
    from builder.plan.planner import Planner

DOCKER_IMAGE_PREFIX = "docker-image://"


@dataclass(frozen=True, slots=True)
class NamedContext:
    """One --build-context: its kind ("dir", "oci-layout" or "docker-image") and value (absolute dir, ref)."""

    name: str
    kind: str
    value: str


def familiar(name: str) -> str:
    """docker's familiar name without `:latest` (BuildKit's key for named contexts); the name itself if invalid."""
    if not name or name != name.lower() or "://" in name:
        return name
    full = normalize_name(name)
    for prefix in ("docker.io/library/", "docker.io/"):
        if full.startswith(prefix):
            full = full[len(prefix):]
            break
    return full.removesuffix(":latest")


def parse_build_contexts(values: list[str]) -> dict[str, NamedContext]:
    """`NAME=SOURCE` words (repeatable) → contexts by familiar name; a bad one is a usage error."""
    out: dict[str, NamedContext] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--build-context {item!r}: expected NAME=SOURCE",
                             hint="NAME=DIR, NAME=oci-layout:///PATH[:TAG|@sha256:...] or NAME=docker-image://REF")
        if value.startswith(OCI_LAYOUT_PREFIX):
            path = value[len(OCI_LAYOUT_PREFIX):]
            ctx = NamedContext(name, "oci-layout", OCI_LAYOUT_PREFIX + os.path.abspath(path))
        elif value.startswith(DOCKER_IMAGE_PREFIX) and value[len(DOCKER_IMAGE_PREFIX):]:
            ctx = NamedContext(name, "docker-image", value[len(DOCKER_IMAGE_PREFIX):])
        elif "://" in value or value.startswith("git@"):
            raise UsageError(f"--build-context {name}={value}: this kind of source is not supported by pybuild yet",
                             hint="use a local directory, oci-layout:///PATH or docker-image://REF")
        elif os.path.isdir(value):
            ctx = NamedContext(name, "dir", os.path.abspath(value))
        else:
            raise UsageError(f"--build-context {name}={value}: no such directory",
                             hint="a local context is a directory; images are docker-image://REF")
        out[familiar(name)] = ctx
    return out


def refuse_host_source(ref: str, inst: nodes.Instruction, what: str) -> None:
    """A Dockerfile cannot name a host path or another scheme as an image: only the operator can."""
    if "://" not in ref:
        return
    raise PybuildError(f"{inst.span}: {what} {ref}: a Dockerfile cannot read host paths or other sources",
                       context=f"{inst.span.line:>5} | {inst.original}", reference="host-path-refused",
                       hint=f"the operator can hand it to the build: --build-context NAME={ref}, "
                            f"then use {what} NAME")


def context_base(p: "Planner", ctx: NamedContext, stage: int, span: nodes.Span) -> tuple[BaseImage, int | None]:
    """The image a named context stands for and the step holding its root (made once per context)."""
    if ctx.name not in p.context_steps:
        if ctx.kind == "dir":  # the directory's files, copied onto scratch (BuildKit: llb.Local as a root)
            op = FileOp((FileAction(op="copy", sources=(".",), dest="/"),), context_dir=ctx.value)
            base = BaseImage(ImageConfig(), None)
            step: int | None = p.graph.add(stage=stage, kind="file", op=op, parent=None, span=span,
                                           created_by=f"context {ctx.name}").id
        else:
            base = resolve_oci_layout(ctx.value) if ctx.kind == "oci-layout" else p.resolve_image(ctx.value)
            step = None if base.source is None else p.graph.add(
                stage=stage, kind="source", op=base.source, parent=None, created_by=f"FROM {ctx.value}",
                span=span).id
        p.context_steps[ctx.name] = (base, step)
    return p.context_steps[ctx.name]


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(rf"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                        r"(?::[\w][\w.-]{0,127})?(?:@[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,})?")


def valid_reference(name: str) -> bool:
    """docker's reference grammar (domain, path, :tag, @digest), as FROM needs it after expansion."""
    return _REFERENCE.fullmatch(name) is not None


def undefined_arg_in_from(base: nodes.From, names: list[str], image: str, declared: dict) -> PybuildError:
    """BuildKit's UndefinedArgInFrom, as an error where the expanded name is no valid reference."""
    name = names[0]
    why = f"ARG {name} is declared without a value" if name in declared else \
        f"FROM argument '{name}' is not declared"
    return PybuildError(f"{base.span}: {why}, so FROM names {image!r}, not a valid image reference "
                        "(UndefinedArgInFrom)", context=f"{base.span.line:>5} | {base.original}",
                        hint=f"declare it before the first FROM (ARG {name}=<default>) or pass --build-arg "
                             f"{name}=<value>; see https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/",
                        reference="undefined-arg-in-from")
