"""The build driver: Dockerfile text → plan → solve → image in the store (and any --output)."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import PybuildError, UsageError
from builder.export.image import assemble
from builder.options import default_root
from builder.outputs import check_outputs, export, parse_output, push_outputs, write_metadata
from builder.plan.bases import normalize_name, resolve_base
from builder.plan.planner import plan
from builder.progress import events as ev
from builder.solve import SolveOptions, Solver

@dataclass
class BuildOptions:
    """Everything `pybuild build` was asked for (the CLI's flags, parsed)."""

    context: str
    dockerfile: str | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    compression: str = "gzip"
    outputs: list[str] = field(default_factory=list)
    iidfile: str | None = None
    root: str = field(default_factory=default_root)
    jobs: int = os.cpu_count() or 1
    explain_cache: bool = False
    secrets: list[str] = field(default_factory=list)  # --secret specs
    ssh: list[str] = field(default_factory=list)  # --ssh specs
    labels: dict[str, str] = field(default_factory=dict)  # --label: on the image's config over LABEL
    network: str = "none"  # --network: RUN's default (none or host)
    platform: str = ""  # --platform: must be this machine's
    metadata_file: str | None = None  # --metadata-file
    no_cache_filter: list[str] = field(default_factory=list)  # stage names built without the cache
    push: bool = False  # --push: push every -t name
    pull: bool = False  # --pull: resolve FROM images in their registry even when stored locally
    insecure_registries: list[str] = field(default_factory=list)  # plain-HTTP registries besides loopback
    check: bool = False  # --check: plan and run the build checks only


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build produced: the image id, manifest digest and the names it was given."""

    image_id: str
    manifest_digest: str
    names: tuple[str, ...]
    stdout_used: bool = False  # an output wrote to stdout: the summary must go elsewhere
    pushed: tuple = ()  # builder.export.push.PushResult per pushed name
    warnings: tuple = ()  # builder.checks.Warning found by the build checks


def check_platform(value: str) -> None:
    """--platform: one platform, this machine's (pybuild neither emulates nor pulls for others)."""
    from builder.plan.planner import PLATFORM_HINT, host_platform, normalize_platform

    if not value:
        return
    if "," in value:
        raise UsageError(f"--platform {value}: multi-platform builds are not supported", hint=PLATFORM_HINT)
    if normalize_platform(value) != host_platform():
        raise UsageError(f"--platform {value}: this build runs on {host_platform()}", hint=PLATFORM_HINT)


def _stage_indices(graph, names: list[str]) -> frozenset[int]:
    """--no-cache-filter names → stage indices (stage names are case-insensitive, as in FROM ... AS)."""
    by_name = {s.name: s.index for s in graph.stages if s.name}
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise UsageError(f"--no-cache-filter: no stage named {unknown[0]!r}",
                         hint=f"stages with a name: {', '.join(by_name) or 'none'}")
    return frozenset(by_name[n.lower()] for n in names)


def _registries(opts: BuildOptions):
    """A factory of the build's one Registries (clients share tokens); urllib is imported only when needed."""
    made: list = []

    def get():
        if not made:
            from builder.export.registry import Registries

            made.append(Registries(tuple(opts.insecure_registries)))
        return made[0]
    return get


def read_dockerfile(opts: BuildOptions) -> tuple[str, str]:
    """(text, name shown in errors)."""
    if opts.dockerfile == "-":
        return sys.stdin.read(), "Dockerfile"
    path = Path(opts.dockerfile) if opts.dockerfile else Path(opts.context) / "Dockerfile"
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError as exc:
        raise UsageError(f"cannot read Dockerfile {path}: no such file",
                         hint="pass -f PATH or put a Dockerfile in the context directory") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"cannot read Dockerfile {path}: it is a directory",
                         hint="-f takes the Dockerfile's path; the context directory is the last argument") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"Dockerfile {path} is not UTF-8 text") from exc


def ignore_patterns(opts: BuildOptions) -> list[str]:
    """Dockerfile-specific `<name>.dockerignore` wins over the context's `.dockerignore` (BuildKit)."""
    from builder.context.dockerignore import read_patterns

    candidates = []
    if opts.dockerfile and opts.dockerfile != "-":
        candidates.append(Path(opts.dockerfile + ".dockerignore"))
    candidates.append(Path(opts.context) / ".dockerignore")
    for path in candidates:
        if path.is_file():
            return read_patterns(path.read_text(encoding="utf-8"))
    return []


def _secrets(opts: BuildOptions, workdir: str) -> dict[str, str]:
    """--secret id → a host file with the value (env secrets are written, 0600, into workdir)."""
    from builder.ops.mounts import read_secret_flag

    return dict(read_secret_flag(spec, workdir) for spec in opts.secrets)


def _excluder(patterns: list[str]):
    if not patterns:
        return None
    from builder.context.dockerignore import PatternMatcher

    matcher = PatternMatcher(patterns)
    return matcher.matches


def stdin_context(opts: BuildOptions, workdir: str) -> BuildOptions:
    """`pybuild -`: stdin is a tar of the context (extracted safely) or, as with docker, just a Dockerfile."""
    import io
    import tarfile
    from dataclasses import replace

    if opts.dockerfile == "-":
        raise UsageError("the context and the Dockerfile cannot both come from stdin",
                         hint="use `-f -` with a context directory, or `-` with a tar that holds the Dockerfile")
    data = sys.stdin.buffer.read()
    context = os.path.join(workdir, "context")
    os.mkdir(context)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            tar.extractall(context, filter="data")  # refuses absolute names, `..` and links leaving the context
    except tarfile.ReadError:
        Path(context, "Dockerfile").write_bytes(data)  # not a tar: a Dockerfile and an empty context
        return replace(opts, context=context, dockerfile=os.path.join(context, "Dockerfile"))
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"cannot unpack the build context from stdin: {exc}") from exc
    dockerfile = os.path.join(context, opts.dockerfile or "Dockerfile")
    return replace(opts, context=context, dockerfile=dockerfile)


def build(opts: BuildOptions, sink: ev.Sink, cancel: threading.Event | None = None, memo=None,
          helpers=None) -> BuildResult:
    """Run the build; `memo` (builder/fastpath.py) learns what a later replay of it needs; `helpers`
    (builder/prestart.py) is a step helpers' fork server already starting."""
    import shutil
    import tempfile

    try:
        if opts.context != "-":
            return _build(opts, sink, cancel, memo, helpers)
        workdir = tempfile.mkdtemp(prefix="pybuild-stdin-")
        try:
            return _build(stdin_context(opts, workdir), sink, cancel, helpers=helpers)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if helpers is not None:
            helpers.close()  # not taken by a solver: the build ended before it solved


def _write_id_files(opts: BuildOptions, image_id: str, manifest, names: tuple[str, ...]) -> None:
    """--iidfile and --metadata-file, once the image is stored; a path that cannot be written is a usage error."""
    try:
        if opts.iidfile:
            what = f"--iidfile {opts.iidfile}"
            Path(opts.iidfile).write_text(image_id)
        if opts.metadata_file:
            what = f"--metadata-file {opts.metadata_file}"
            write_metadata(opts.metadata_file, image_id, manifest, names)
    except OSError as exc:
        raise UsageError(f"cannot write {what}: {exc.strerror or exc}",
                         hint=f"the image was built and stored (image id {image_id})") from None


def _build(opts: BuildOptions, sink: ev.Sink, cancel: threading.Event | None = None, memo=None,
           helpers=None) -> BuildResult:
    import grammar
    from cache import Store

    started = time.monotonic()
    if not os.path.isdir(opts.context):
        raise UsageError(f"build context {opts.context!r} is not a directory",
                         hint="the last argument is the context directory (or - for a tar on stdin)")
    text, name = read_dockerfile(opts)
    dockerfile = grammar.parse_memo(text, filename=name)
    outputs = push_outputs([parse_output(o) for o in opts.outputs], opts.push)
    check_outputs(outputs, opts.tags)
    check_platform(opts.platform)
    patterns = ignore_patterns(opts)
    store = Store.open(opts.root)
    workdir = tempfile.mkdtemp(prefix="pybuild-secrets-") if opts.secrets else ""
    agents = None
    try:
        if opts.ssh:  # before planning: a bad --ssh fails at once
            from builder.ops.sshagent import Agents

            agents = Agents(opts.ssh)
        registries = _registries(opts)

        def fetch(ref: str) -> None:
            from builder.export.pull import pull_image

            pull_image(store, ref, registries(),
                       progress=lambda layer, current, total: sink(ev.TransferProgress("pull", ref, layer, current,
                                                                                         total)))
        unmatched: list = []
        resolve = lambda ref: resolve_base(store, ref, pull=opts.pull, fetch=fetch)  # noqa: E731
        graph = plan(dockerfile, build_args=opts.build_args, target=opts.target, network=opts.network,
                     labels=opts.labels, unmatched=unmatched,
                     resolve_image=memo.resolver(resolve) if memo is not None else resolve)
        warnings = _checks(opts, dockerfile, text, tuple(unmatched), patterns, sink)
        if opts.check:
            return BuildResult("", "", (), warnings=tuple(warnings))
        options = SolveOptions(context_dir=os.path.abspath(opts.context), use_cache=not opts.no_cache,
                               no_cache_stages=_stage_indices(graph, opts.no_cache_filter),
                               compression=opts.compression, jobs=opts.jobs, dockerfile_lines=text.splitlines(),
                               ignore_patterns=patterns, excluded=_excluder(patterns),
                               explain=opts.explain_cache, secrets=_secrets(opts, workdir),
                               ssh=agents.sockets if agents is not None else None)
        solver = Solver(store, graph, options, sink, cancel)
        if helpers is not None:
            solver.use_helpers(helpers.take())
        results = solver.solve(graph.target)
        if memo is not None:
            memo.finish(graph, results)
        config, manifest, layers = assemble(graph, graph.target, results)
        record = store.put_image(manifest, config, list(layers))
        names = tuple(normalize_name(t) for t in opts.tags)
        for full in names:
            store.tag(full, record.manifest.digest)
        pushed: list = []
        for out in outputs:
            export(store, record, out, names, registries, pushed, sink)
    finally:
        store.close()
        if agents is not None:
            agents.close()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    _write_id_files(opts, image_id, record.manifest, names)
    sink(ev.BuildDone(image_id, record.manifest.digest, time.monotonic() - started))
    return BuildResult(image_id, record.manifest.digest, names,
                       stdout_used=any(o.dest == "-" for o in outputs), pushed=tuple(pushed), warnings=tuple(warnings))


def _checks(opts: BuildOptions, dockerfile, text: str, unmatched: tuple, patterns: list[str], sink: ev.Sink) -> list:
    """The build checks (builder/checks.py); with `# check=error=true` a warning fails the build before it runs."""
    from builder import checks

    warnings, config = checks.for_build(dockerfile, text, opts.build_args, unmatched, patterns)
    for w in warnings:
        sink(ev.BuildWarning(w.rule, w.message, w.url, w.span.file, w.span.line))
    if warnings and config.error and not opts.check:
        raise checks.failure(warnings)
    return warnings


__all__ = ["BuildOptions", "BuildResult", "build", "PybuildError", "default_root"]
