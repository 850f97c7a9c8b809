"""The step graph: what `solve` executes. Built by the planner, never from raw Dockerfile text.

A Step's `parent` is the step whose output filesystem it starts from (None = scratch); `deps` are extra
inputs (COPY --from stages). Metadata-only instructions make no Step: they change the stage's ImageConfig and add
a history line (kaniko's MetadataOnly).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

from builder.plan.imageconfig import ImageConfig
from grammar.nodes import Span

if TYPE_CHECKING:
    from builder.plan.keys import CacheKey  # keys imports steps
    from cache.model import Layer, Snapshot


@dataclass(frozen=True, slots=True)
class LayerRef:
    """One layer of a base image: its compressed blob and uncompressed digest."""

    media_type: str
    digest: str
    size: int
    diff_id: str


@dataclass(frozen=True, slots=True)
class SourceOp:
    """A base image: its layers are imported into snapshots (reused when already present)."""

    ref: str  # as the user wrote it, for display
    manifest_digest: str
    layers: tuple[LayerRef, ...]
    layout_dir: str | None = None  # oci-layout:// bases: where to copy blobs from
    image_id: str = ""  # the config's digest: the cache key (the manifest's changes with the layers' compression)


@dataclass(frozen=True, slots=True)
class RunMount:
    """One `RUN --mount=...` (BuildKit's instructions/commands_runmount.go), values expanded."""

    type: str  # "bind" | "cache" | "tmpfs" | "secret" | "ssh"
    target: str
    source: str = ""
    from_stage: int | None = None  # from=<stage>: source inside that stage's root (IMAGE_ROOT: an image)
    from_step: int | None = None
    id: str = ""
    sharing: str = "shared"  # cache: shared | private | locked
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    readonly: bool = False
    required: bool = False
    size: str = ""  # tmpfs size
    env: str = ""  # secret: also (or, without target=, only) as this environment variable of the RUN


@dataclass(frozen=True, slots=True)
class ExecOp:
    """What a RUN step executes: argv, environment, working directory, user, network, mounts."""

    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    network: str = "none"
    stdin_script: str | None = None
    mounts: tuple[RunMount, ...] = ()
    insecure: bool = False  # RUN --security=insecure, granted by --allow security.insecure


@dataclass(frozen=True, slots=True)
class FileAction:
    """One COPY/ADD/WORKDIR action for builder/ops/fileop.py (serialised as JSON)."""

    op: str  # "copy" | "mkdir" | "write" | "fetch"
    sources: tuple[str, ...] = ()
    dest: str = ""
    chown: str | None = None
    chmod: str | None = None
    extract: bool = False  # ADD: unpack local archives
    content: str | None = None  # "write": heredoc body
    url: str = ""  # "fetch" (ADD <url>): what to download, saved as `name` under dest/ or as dest
    name: str = ""
    checksum: str = ""  # ADD --checksum=sha256:...
    excludes: tuple[str, ...] = ()  # COPY/ADD --exclude: patterns relative to each copied source
    parents: bool = False  # COPY --parents: keep the source's path (after a `/./` pivot) under dest

    def to_json(self) -> dict:
        doc = {"op": self.op, "sources": list(self.sources), "dest": self.dest, "chown": self.chown,
               "chmod": self.chmod, "extract": self.extract, "content": self.content, "path": self.dest}
        if self.op == "fetch":  # only here: the keys of other actions stay as they were
            doc.update(url=self.url, name=self.name, checksum=self.checksum)
        if self.excludes:  # only when given, likewise
            doc["excludes"] = list(self.excludes)
        if self.parents:
            doc["parents"] = True
        return doc


IMAGE_ROOT = -1  # from_stage of `COPY --from=<image>` / `--mount=...,from=<image>`: an image, not a stage


@dataclass(frozen=True, slots=True)
class FileOp:
    """What a COPY/ADD/WORKDIR step does: its file actions, and where sources come from."""

    actions: tuple[FileAction, ...]
    from_stage: int | None = None  # COPY --from=<stage>: sources come from that stage's root, else the context
    # (IMAGE_ROOT for --from=<image>: from_step is then the image's source step)
    from_step: int | None = None  # that stage's last step (None with from_stage set: an empty root)
    context_dir: str | None = None  # a named --build-context directory instead of the build's context


@dataclass(frozen=True, slots=True)
class MergeOp:
    """COPY --link: the layer of `layer_step` (a copy made on an empty root) stacked on the parent's filesystem,
    as BuildKit's MergeOp; the layer does not depend on what the parent holds."""

    layer_step: int


Op = Union[SourceOp, ExecOp, FileOp, MergeOp]


@dataclass(frozen=True, slots=True)
class Step:
    """One node of the step graph: a source, an exec or a file operation over its parent's filesystem."""

    id: int
    stage: int
    kind: str  # "source" | "exec" | "file" | "merge"
    op: Op
    parent: int | None
    created_by: str  # the history line, e.g. "RUN /bin/sh -c make"
    span: Span | None = None
    deps: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StepResult:
    """A solved step: its key, the snapshot it leaves and the layers it added (made by solve, read by export,
    so it lives here, below both)."""

    key: CacheKey
    snapshot: Snapshot | None  # None: scratch, or a remote cache hit not unpacked yet
    layers: tuple[Layer, ...]  # in order
    created: float
    cached: bool


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """A history line of the stage's image: metadata only (step None) or the result of a step."""

    created_by: str
    step: int | None


@dataclass(frozen=True, slots=True)
class StagePlan:
    """A planned stage: its final config and history, and the step that leaves its filesystem."""

    index: int
    name: str | None
    config: ImageConfig  # final config, diff_ids and history of the *base* only
    base_history_len: int
    history: tuple[HistoryItem, ...]
    last_step: int | None  # the step whose output is the stage's filesystem; None = scratch
    base_created: float = 0.0


@dataclass
class StepGraph:
    """Every step of the build in Dockerfile order, the stages, and the target stage's index."""

    steps: list[Step] = field(default_factory=list)
    stages: list[StagePlan] = field(default_factory=list)
    target: int = -1

    def add(self, **kwargs) -> Step:
        step = Step(id=len(self.steps), **kwargs)
        self.steps.append(step)
        return step

    def needed(self, stage_index: int) -> list[Step]:
        """Steps needed to build a stage, in execution order (dependencies first)."""
        seen: set[int] = set()
        order: list[Step] = []

        def visit(step_id: int | None) -> None:
            if step_id is None or step_id in seen:
                return
            seen.add(step_id)
            step = self.steps[step_id]
            visit(step.parent)
            for dep in step.deps:
                visit(dep)
            order.append(step)

        visit(self.stages[stage_index].last_step)
        return order
