"""Plan a parsed Dockerfile into a StepGraph: stage order, ARG/ENV scoping, base images, --target pruning.

Expansion follows BuildKit: global ARGs (before the first FROM) are visible in FROM lines only; inside a stage an
`ARG NAME` re-declaration brings a global value in; `--build-arg` overrides declared ARGs; ENV wins over ARG.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from collections.abc import Mapping
from typing import Callable

from builder.errors import PybuildError
from builder.plan import dispatch
from builder.plan.bases import BaseImage
from builder.plan.contexts import (context_base, familiar, refuse_host_source, undefined_arg_in_from,
                                   valid_reference)
from builder.plan.features import refuse_flags
from builder.plan.imageconfig import ARCHITECTURES, ImageConfig, host_architecture
from builder.plan.steps import HistoryItem, StagePlan, StepGraph
from grammar import nodes
from grammar.shell import ShellExpansionError, ShellLex


def platform_args() -> dict[str, str]:
    arch = host_architecture()
    plat = f"linux/{arch}"
    return {"BUILDPLATFORM": plat, "BUILDOS": "linux", "BUILDARCH": arch, "BUILDVARIANT": "",
            "TARGETPLATFORM": plat, "TARGETOS": "linux", "TARGETARCH": arch, "TARGETVARIANT": ""}


_ARCH_ALIASES = {**ARCHITECTURES, "x86-64": "amd64", "armhf": "arm/v7", "armel": "arm/v6"}
_OSES = ("linux", "windows", "darwin", "freebsd")


def normalize_platform(text: str) -> str:
    """os/arch[/variant] as containerd's platforms.Parse + Normalize: lower case, an OS alone gets the host's
    architecture, an architecture alone the OS linux, arch aliases mapped (x86_64 → amd64, aarch64 → arm64),
    and arm64's default variant v8 dropped."""
    parts = [p for p in text.strip().lower().split("/") if p]
    if len(parts) == 1:
        parts = [parts[0], host_architecture()] if parts[0] in _OSES else ["linux", parts[0]]
    os_name, arch, *variant = parts
    arch, _, alias_variant = _ARCH_ALIASES.get(arch, arch).partition("/")
    variant = variant or ([alias_variant] if alias_variant else [])
    if arch == "arm64" and variant == ["v8"]:
        variant = []
    return "/".join([os_name, arch, *variant[:1]])


def host_platform() -> str:
    return f"linux/{host_architecture()}"


PLATFORM_HINT = ("pybuild runs and pulls images of the build machine's own platform only (no emulation); build on a "
                 "machine of that platform, or drop --platform")


PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY",
              "no_proxy", "ALL_PROXY", "all_proxy")


MAX_EXPANDED = 4 << 20  # characters one expanded word may have (ENV, LABEL, ARG values, COPY sources ...)


@dataclass(frozen=True)
class Unmatched:
    """A variable an expansion could not match (the build checks' UndefinedVar / UndefinedArgInFrom)."""

    span: nodes.Span
    name: str
    in_from: bool  # a FROM line (global ARGs) rather than an instruction of a stage
    options: tuple[str, ...]  # the names that were defined there, for "did you mean"


@dataclass
class StageState:
    """Mutable while one stage is dispatched; everything it hands on is frozen."""

    index: int
    name: str | None
    config: ImageConfig
    parent: int | None
    history: list[HistoryItem]
    base_history_len: int
    base_created: float
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False

    def expand_env(self) -> Mapping[str, str]:
        """What `$NAME` sees: ENV over ARG, looked up by name (building the dict per word was quadratic)."""
        return _ExpandEnv(self.args, self.config)


class _ExpandEnv(Mapping):
    """The stage's ENV over its ARGs (those with a value), without copying either."""

    def __init__(self, args: dict[str, str | None], config: ImageConfig) -> None:
        self._args, self._config = args, config

    def get(self, key, default=None):
        value = self._config.env_get(key)
        if value is None:
            value = self._args.get(key)
        return default if value is None else value

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def _dict(self) -> dict[str, str]:
        env = {k: v for k, v in self._args.items() if v is not None}
        env.update(self._config.env_dict())
        return env

    def __iter__(self):
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())


@dataclass
class Planner:
    """Turns a parsed Dockerfile into the step graph, one stage at a time (builder/plan/dispatch.py per instruction)."""

    dockerfile: nodes.Dockerfile
    build_args: dict[str, str]
    resolve_image: Callable[[str], BaseImage]
    graph: StepGraph = field(default_factory=StepGraph)
    network: str = "default"  # the build's --network: what RUN gets without --network or with --network=default
    labels: dict[str, str] = field(default_factory=dict)  # the build's --label: set on the target's config last
    entitlements: frozenset[str] = frozenset()  # the operator's --allow (builder/plan/entitle.py)
    contexts: dict = field(default_factory=dict)  # --build-context by familiar name (builder/plan/contexts.py)

    def __post_init__(self) -> None:
        self.lex = ShellLex(self.dockerfile.escape)
        self.global_args: dict[str, str | None] = {}
        self._image_roots: dict[str, int | None] = {}
        self.unmatched: list[Unmatched] = []
        self._scope: StageState | str = "meta"  # where expansions happen: "meta", "from" or the stage's state
        self.context_steps: dict[str, tuple[BaseImage, int | None]] = {}

    def named_context(self, name: str):
        """The --build-context this name means (BuildKit matches familiar names), or None."""
        return self.contexts.get(familiar(name)) if self.contexts else None

    def image_root(self, image: str, stage: int, span: nodes.Span) -> int | None:
        """The step holding the root of an image named by `COPY --from=` or `RUN --mount=...,from=` (None:
        scratch), made once per image: BuildKit treats a from that names no stage as an image reference."""
        named = self.named_context(image)
        if named is not None:
            return context_base(self, named, stage, span)[1]
        if "://" in image:
            raise PybuildError(f"{image}: a Dockerfile cannot read host paths or other sources",
                               hint=f"the operator can hand it to the build: --build-context NAME={image}, then "
                                    "use NAME", reference="host-path-refused")
        if image not in self._image_roots:
            source = self.resolve_image(image).source
            step = None if source is None else self.graph.add(stage=stage, kind="source", op=source, parent=None,
                                                             created_by=f"FROM {image}", span=span).id
            self._image_roots[image] = step
        return self._image_roots[image]

    def expand(self, word: str, env: Mapping[str, str], span: nodes.Span) -> str:
        try:
            result, _, unmatched = self.lex.process_word_with_matches(word, env)
        except ShellExpansionError as exc:
            raise PybuildError(f"{span}: {exc}", reference="expansion-failed") from exc
        if unmatched and self._scope != "meta":
            self._record_unmatched(unmatched, env, span)
        if len(result) > MAX_EXPANDED:  # `ENV A=$A$A` 40 times would double to a terabyte
            raise PybuildError(f"{span}: a variable expands to more than {MAX_EXPANDED >> 20} MiB",
                               hint="a value that grows on every ENV/ARG line (e.g. A=$A$A) cannot be built",
                               reference="expansion-too-large")
        return result

    def _record_unmatched(self, names: set[str], env: Mapping[str, str], span: nodes.Span) -> None:
        """BuildKit's reportUnmatchedVariables / reportUnusedFromArgs: declared ARGs without a value are fine."""
        if isinstance(self._scope, StageState):
            # the names for "did you mean" are copied for the first 100 records only: a file full of undefined
            # variables must not make planning quadratic
            options = tuple(env) if len(self.unmatched) < 100 else ()
            declared, in_from = set(self._scope.args), False
        else:
            declared = set(self.global_args) | set(platform_args())
            options, in_from = tuple(declared), True
        for name in sorted(names - declared):
            self.unmatched.append(Unmatched(span, name, in_from, options))

    def plan(self, target: str | None) -> StepGraph:
        self._plan_meta_args()
        stages = self.dockerfile.stages
        index = self._target_index(target) if target else len(stages) - 1
        needed = self._needed_stages(index)
        for stage in stages:
            if stage.index in needed:
                self.graph.stages.append(self._plan_stage(stage))
            else:
                self.graph.stages.append(StagePlan(stage.index, stage.name, ImageConfig(), 0, (), None))
        self.graph.target = index
        if self.labels:  # as BuildKit's dockerfile2llb: the build's labels go on the target image last
            target_plan = self.graph.stages[index]
            config = target_plan.config
            for key, value in self.labels.items():
                config = config.with_label(key, value)
            self.graph.stages[index] = replace(target_plan, config=config)
        return self.graph

    def _plan_meta_args(self) -> None:
        for arg in self.dockerfile.meta_args:
            for decl in arg.args:
                env = {**platform_args(), **{k: v for k, v in self.global_args.items() if v is not None}}
                value = self.expand(decl.default, env, arg.span) if decl.default is not None else None
                self.global_args[decl.name] = self.build_args.get(decl.name, value)

    def _target_index(self, target: str) -> int:
        for stage in self.dockerfile.stages:
            if stage.name == target.lower():
                return stage.index
        names = ", ".join(s.name for s in self.dockerfile.stages if s.name) or "none"
        raise PybuildError(f"target stage {target!r} could not be found", hint=f"stages with a name: {names}",
                           reference="target-not-found")

    def _stage_ref(self, word: str) -> int | None:
        if self.named_context(word) is not None:  # a --build-context of that name replaces the stage
            return None
        return self._stage_names.get(word.lower())

    @cached_property
    def _stage_names(self) -> dict[str, int]:
        """Stage name → index of the first stage so named (a scan per lookup made many stages quadratic)."""
        names: dict[str, int] = {}
        for stage in self.dockerfile.stages:
            if stage.name is not None:
                names.setdefault(stage.name, stage.index)
        return names

    def _needed_stages(self, index: int) -> set[int]:
        """--target reachability: the target and every stage it uses through FROM or --from."""
        needed: set[int] = set()
        todo = [index]
        while todo:
            current = todo.pop()
            if current in needed:
                continue
            needed.add(current)
            stage = self.dockerfile.stages[current]
            ref = self._stage_ref(self._from_image(stage.base))
            if ref is not None and ref < current:
                todo.append(ref)
            for inst in stage.instructions:
                sources = [inst.flag("from")] if isinstance(inst, nodes.Copy) else []
                if isinstance(inst, nodes.Run):  # RUN --mount=...,from=<stage>
                    sources += [f.split("=", 1)[1] for v in inst.flag_values("mount") for f in v.split(",")
                                if f.strip().startswith("from=")]
                for src in filter(None, sources):
                    ref = self._stage_ref(src) if not src.isdigit() else int(src)
                    if ref is not None and ref < current:
                        todo.append(ref)
        return needed

    def _from_image(self, base: nodes.From) -> str:
        env = {**platform_args(), **{k: v for k, v in self.global_args.items() if v is not None}}
        self._scope = "from"
        try:
            image, _, unmatched = self.lex.process_word_with_matches(base.image, env)
        except ShellExpansionError as exc:
            raise PybuildError(f"{base.span}: {exc}", reference="expansion-failed") from exc
        if unmatched:
            self._record_unmatched(unmatched, env, base.span)
        if unmatched and not valid_reference(image):
            raise undefined_arg_in_from(base, sorted(unmatched), image, self.global_args)
        return image

    def _plan_stage(self, stage: nodes.Stage) -> StagePlan:
        refuse_flags(stage.base)
        image = self._from_image(stage.base)
        wanted = stage.base.flag("platform")
        if wanted:
            env = {**platform_args(), **{k: v for k, v in self.global_args.items() if v is not None}}
            value = self.expand(wanted, env, stage.base.span)
            if normalize_platform(value) != host_platform():
                raise PybuildError(f"{stage.base.span}: FROM --platform={value}: this build runs on "
                                   f"{host_platform()}, and an image of another platform would neither be pulled "
                                   "nor run", context=dispatch.shown(stage.base), hint=PLATFORM_HINT,
                                   reference="unsupported-platform")
        if not image:
            raise PybuildError(f"{stage.base.span}: FROM names no image after expansion",
                               context=dispatch.shown(stage.base), reference="empty-base")
        ref = self._stage_ref(image)
        replaced = self.named_context(stage.name) if stage.name else None
        if replaced is not None:  # buildx: a --build-context of the stage's name overwrites the stage
            base, parent = context_base(self, replaced, stage.index, stage.base.span)
            return StagePlan(stage.index, stage.name, replace(base.config, onbuild=()), len(base.config.history),
                             (), parent, base.created)
        if ref is not None and ref < stage.index:
            base_plan = self.graph.stages[ref]
            state = StageState(stage.index, stage.name, base_plan.config, base_plan.last_step,
                               list(base_plan.history), base_plan.base_history_len, base_plan.base_created)
        else:
            state = self._image_state(stage, image)
        self._scope = state
        for inst in stage.instructions:
            dispatch.dispatch(self, state, inst)
        return StagePlan(stage.index, stage.name, state.config, state.base_history_len, tuple(state.history),
                         state.parent, state.base_created)

    def _image_state(self, stage: nodes.Stage, image: str) -> StageState:
        """A stage FROM an image (or a --build-context of that name), its ONBUILD triggers dispatched."""
        named = self.named_context(image)
        if named is not None:
            base, parent = context_base(self, named, stage.index, stage.base.span)
        else:
            refuse_host_source(image, stage.base, "FROM")
            base = self.resolve_image(image)
            parent = None
            if base.source is not None:
                parent = self.graph.add(stage=stage.index, kind="source", op=base.source, parent=None,
                                        created_by=f"FROM {image}", span=stage.base.span).id
        state = StageState(stage.index, stage.name, replace(base.config, onbuild=()), parent, [],
                           len(base.config.history), base.created)
        self._scope = state
        for inst in self._onbuild_triggers(base.config.onbuild, stage):
            dispatch.dispatch(self, state, inst)
        return state

    def _onbuild_triggers(self, triggers: tuple[str, ...], stage: nodes.Stage) -> list[nodes.Instruction]:
        """A base image's ONBUILD triggers, parsed; they run first in the stage that uses it (docker)."""
        import grammar  # lazy: saves <1 ms at start-up (its modules are loaded by then)

        out: list[nodes.Instruction] = []
        for trigger in triggers:
            try:
                parsed = grammar.parse(f"FROM scratch\n{trigger}\n", filename=f"ONBUILD trigger of {stage.base.image}")
            except grammar.DockerfileSyntaxError as exc:
                raise PybuildError(f"{stage.base.span}: the base image's ONBUILD trigger {trigger!r} is invalid: "
                                   f"{exc.message}", reference="bad-onbuild-trigger") from exc
            out.extend(parsed.stages[0].instructions)
        return out

    def arg_value(self, name: str) -> str | None:
        """The value an in-stage `ARG NAME` (no default) gets: --build-arg, else the global one."""
        if name in self.build_args:
            return self.build_args[name]
        if name in self.global_args:
            return self.global_args[name]
        if name in platform_args():
            return platform_args()[name]
        return None


def plan(dockerfile: nodes.Dockerfile, *, build_args: dict[str, str], target: str | None,
         resolve_image: Callable[[str], BaseImage], network: str = "default",
         labels: dict[str, str] | None = None, entitlements: frozenset[str] | None = None,
         contexts: dict | None = None, unmatched: list[Unmatched] | None = None) -> StepGraph:
    """Plan `dockerfile` for `target` (default: the last stage); ``network`` is the RUN default (default, none or
    host), ``labels`` are set on the target image's config over the Dockerfile's, ``entitlements`` the operator's
    --allow (the default: what ``network`` implies); the variables that expansions could not match are appended
    to ``unmatched`` (for the build checks)."""
    if entitlements is None:
        entitlements = frozenset({"network.host"}) if network == "host" else frozenset()
    planner = Planner(dockerfile, build_args, resolve_image, network=network, labels=labels or {},
                      entitlements=entitlements, contexts=contexts or {})
    try:
        return planner.plan(target)
    finally:  # also when planning fails: the checks still have something to say
        if unmatched is not None:
            unmatched.extend(planner.unmatched)


__all__ = ["plan", "Planner", "StageState", "Unmatched", "PROXY_ARGS", "replace"]
