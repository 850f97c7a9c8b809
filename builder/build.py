"""The build driver: Dockerfile text → plan → solve → image in the store (and any --output)."""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from builder.errors import PybuildError, UsageError
from builder.export.image import assemble
from builder.options import default_root, source_date_epoch
from builder.outputs import check_outputs, export, parse_output, push_outputs, write_metadata
from builder.plan.bases import normalize_name, resolve_base
from builder.plan.contexts import parse_build_contexts
from builder.plan.entitle import parse_allow
from builder.plan.planner import PROXY_ARGS, plan
from builder.progress import events as ev
from builder.progress.tasks import read_context, resolving, summary
from builder.solve import SolveOptions, Solver

if TYPE_CHECKING:
    from builder.export.registry import Registries
    from cache import Store


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
    network: str = "default"  # --network: RUN's default (default = the bridge, none or host)
    bridge_subnet: str | None = None  # --bridge-subnet / PYBUILD_BRIDGE_SUBNET
    add_hosts: list[str] = field(default_factory=list)  # --add-host NAME:IP
    platform: str = ""  # --platform: must be this machine's
    metadata_file: str | None = None  # --metadata-file
    no_cache_filter: list[str] = field(default_factory=list)  # stage names built without the cache
    push: bool = False  # --push: push every -t name
    pull: bool = False  # --pull: resolve FROM images in their registry even when stored locally
    insecure_registries: list[str] = field(default_factory=list)  # plain-HTTP registries besides loopback
    check: bool = False  # --check: plan and run the build checks only
    cache_from: list[str] = field(default_factory=list)  # --cache-from specs (builder/remotecache)
    cache_to: list[str] = field(default_factory=list)  # --cache-to specs
    registry_deadline: float | None = None  # --registry-deadline: seconds one registry request may take
    registry_min_rate: int | None = None  # --registry-min-rate: bytes/s a registry request must average
    allow: list[str] = field(default_factory=list)  # --allow: entitlements (builder/plan/entitle.py)
    build_contexts: list[str] = field(default_factory=list)  # --build-context NAME=SOURCE
    on_error: str = "fail"  # --on-error=shell: a shell in a failed RUN's container before the build ends
    resources: Any = None  # builder.sandbox.spec.Resources: every RUN's cgroup limits (None: the defaults)
    source_date_epoch: int | None = field(default_factory=source_date_epoch)  # the one read of the variable


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build produced: the image id, manifest digest and the names it was given."""

    image_id: str
    manifest_digest: str
    names: tuple[str, ...]
    stdout_used: bool = False  # an output wrote to stdout: the summary must go elsewhere
    pushed: tuple = ()  # builder.export.push.PushResult per pushed name
    warnings: tuple = ()  # builder.checks.Warning found by the build checks
    cache_exports: tuple = ()  # builder.remotecache.exporters.ExportResult per --cache-to


def check_platform(value: str) -> None:
    """--platform: one platform, this machine's (pybuild neither emulates nor pulls for others)."""
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
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
            # lazy: saves ~11 ms at start-up
            from builder.export.registry import Registries
            from builder.export.transfer import TransferLimits

            limits = TransferLimits()
            if opts.registry_deadline is not None:
                limits = replace(limits, deadline=opts.registry_deadline)
            if opts.registry_min_rate is not None:
                limits = replace(limits, min_rate=opts.registry_min_rate)
            made.append(Registries(tuple(opts.insecure_registries), limits))
        return made[0]
    return get


def _on_error(mode: str):
    """--on-error: None (fail at once) or the debug-shell hook (builder/debugshell.py)."""
    if mode != "shell":
        return None
    from builder.debugshell import shell_hook  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    return shell_hook()


def read_dockerfile(opts: BuildOptions) -> tuple[str, str]:
    """(text, name shown in errors): a regular file of at most MAX_DOCKERFILE bytes, its symlinks resolved
    inside its own directory as BuildKit's "dockerfile" local does (builder/context/inputs.py)."""
    # lazy: saves ~1 ms at start-up
    from builder.context.inputs import MAX_DOCKERFILE, decode, read_bounded_stream, read_confined

    if opts.dockerfile == "-":
        return decode(read_bounded_stream(sys.stdin.buffer, what="the Dockerfile", limit=MAX_DOCKERFILE),
                      "the Dockerfile from stdin"), "Dockerfile"
    path = opts.dockerfile if opts.dockerfile else os.path.join(opts.context, "Dockerfile")
    return decode(read_confined(path, what="Dockerfile", limit=MAX_DOCKERFILE), f"Dockerfile {path}"), path


def ignore_patterns(opts: BuildOptions) -> list[str]:
    """Dockerfile-specific `<name>.dockerignore` wins over the context's `.dockerignore` (BuildKit); each is
    read like the Dockerfile (a regular file, symlinks resolved inside its directory, bounded)."""
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    from builder.context.dockerignore import read_patterns
    from builder.context.inputs import MAX_IGNORE, decode, read_confined

    candidates = []
    if opts.dockerfile and opts.dockerfile != "-":
        candidates.append(opts.dockerfile + ".dockerignore")
    candidates.append(os.path.join(opts.context, ".dockerignore"))
    for path in candidates:
        data = read_confined(path, what="ignore file", limit=MAX_IGNORE, missing_ok=True)
        if data is not None:
            return read_patterns(decode(data, f"ignore file {path}"))
    return []


def _extra_hosts(items: list[str]) -> tuple[tuple[str, str], ...]:
    """--add-host NAME:IP (or NAME=IP; IP may be host-gateway, the bridge's address), checked as docker does."""
    import ipaddress  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    pairs = []
    for item in items:
        sep = "=" if "=" in item else ":"
        name, _, ip = item.partition(sep)
        ip = ip.strip("[]")
        try:
            if not name or (ip != "host-gateway" and not ipaddress.ip_address(ip)):
                raise ValueError
        except ValueError:
            raise UsageError(f"--add-host {item!r} is not NAME:IP",
                             hint="give a host name and an IP address (or host-gateway), e.g. --add-host "
                                  "db:10.0.0.5") from None
        pairs.append((name, ip))
    return tuple(pairs)


def _secrets(opts: BuildOptions, workdir: str) -> dict[str, str]:
    """--secret id → a host file with the value (env secrets are written, 0600, into workdir)."""
    from builder.ops.mounts import read_secret_flag  # lazy: saves ~5 ms at start-up

    return dict(read_secret_flag(spec, workdir) for spec in opts.secrets)


def _excluder(patterns: list[str]):
    if not patterns:
        return None
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    from builder.context.dockerignore import PatternMatcher

    matcher = PatternMatcher(patterns)
    return matcher.matches


def stdin_context(opts: BuildOptions, workdir: str, sink: ev.Sink | None = None) -> BuildOptions:
    """`pybuild -`: stdin is a tar of the context (extracted safely) or, as with docker, just a Dockerfile."""
    # lazy: saves ~2 ms at start-up
    import io
    import tarfile
    from dataclasses import replace

    if opts.dockerfile == "-":
        raise UsageError("the context and the Dockerfile cannot both come from stdin",
                         hint="use `-f -` with a context directory, or `-` with a tar that holds the Dockerfile")
    data = read_context(sys.stdin.buffer, sink or (lambda event: None))
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
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    import shutil
    import tempfile

    try:
        if opts.context != "-":
            return _build(opts, sink, cancel, memo, helpers)
        workdir = tempfile.mkdtemp(prefix="pybuild-stdin-")
        try:
            return _build(stdin_context(opts, workdir, sink), sink, cancel, helpers=helpers)
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


def _fetcher(store: Store, registries: Callable[[], Registries], sink: ev.Sink) -> Callable[[str], None]:
    """FROM's pull of a base the store lacks: its layers unpacked while they download, the resolve and the
    bytes reported to ``sink``."""
    def fetch(ref: str) -> None:
        from builder.export.pull import pull_image  # lazy: saves ~25 ms at start-up

        with resolving(sink, normalize_name(ref)):
            pull_image(store, ref, registries(),
                       progress=lambda layer, current, total: sink(ev.TransferProgress("pull", ref, layer,
                                                                                         current, total)),
                       unpack=True)
    return fetch


def _build(opts: BuildOptions, sink: ev.Sink, cancel: threading.Event | None = None, memo=None,
           helpers=None) -> BuildResult:
    # lazy: saves ~2 ms at start-up
    import grammar
    from builder.remotecache.session import CacheSession
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
    cache = CacheSession(opts.cache_from, opts.cache_to)  # bad specs fail here, before building
    entitlements = parse_allow(opts.allow, opts.network)
    contexts = parse_build_contexts(opts.build_contexts)
    store = Store.open(opts.root)
    workdir = tempfile.mkdtemp(prefix="pybuild-secrets-") if opts.secrets else ""
    agents = None
    try:
        if opts.ssh:  # before planning: a bad --ssh fails at once
            from builder.ops.sshagent import Agents  # lazy: saves ~4 ms at start-up

            agents = Agents(opts.ssh)
        registries = _registries(opts)
        fetch = _fetcher(store, registries, sink)
        unmatched: list = []
        resolve = lambda ref: resolve_base(store, ref, pull=opts.pull, fetch=fetch)  # noqa: E731
        graph = plan(dockerfile, build_args=opts.build_args, target=opts.target, network=opts.network,
                     labels=opts.labels, unmatched=unmatched, entitlements=entitlements, contexts=contexts,
                     resolve_image=memo.resolver(resolve) if memo is not None else resolve)
        warnings = _checks(opts, dockerfile, text, tuple(unmatched), patterns, sink)
        if opts.check:
            return BuildResult("", "", (), warnings=tuple(warnings))
        options = _solve_options(opts, graph, text, patterns, workdir, agents, cache.remote(registries))
        solver = Solver(store, graph, options, sink, cancel)
        if helpers is not None:
            solver.use_helpers(helpers.take())
        results = solver.solve(graph.target)
        if memo is not None:
            memo.finish(graph, results)
        config, record, names, pushed = _store(opts, store, solver, graph, results, outputs, cache, registries, sink)
    finally:
        store.close()
        if agents is not None:
            agents.close()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    _write_id_files(opts, image_id, record.manifest, names)
    sink(summary(results, record, time.monotonic() - started))
    sink(ev.BuildDone(image_id, record.manifest.digest, time.monotonic() - started))
    return BuildResult(image_id, record.manifest.digest, names if cache.stored else (),
                       stdout_used=any(o.dest == "-" for o in outputs), pushed=tuple(pushed),
                       cache_exports=tuple(cache.results), warnings=tuple(warnings))


def _solve_options(opts: BuildOptions, graph, text: str, patterns: list[str], workdir: str, agents,
                   remote) -> SolveOptions:
    """What the solver needs of the build's options (secrets written to `workdir`, the ssh `agents`)."""
    return SolveOptions(context_dir=os.path.abspath(opts.context), use_cache=not opts.no_cache,
                        no_cache_stages=_stage_indices(graph, opts.no_cache_filter),
                        compression=opts.compression, jobs=opts.jobs, dockerfile_lines=text.splitlines(),
                        ignore_patterns=patterns, excluded=_excluder(patterns),
                        explain=opts.explain_cache, secrets=_secrets(opts, workdir),
                        ssh=agents.sockets if agents is not None else None, remote=remote,
                        on_error=_on_error(opts.on_error), resources=opts.resources,
                        bridge_subnet=opts.bridge_subnet, extra_hosts=_extra_hosts(opts.add_hosts),
                        proxy_env=tuple(f"{k}={v}" for k, v in opts.build_args.items() if k in PROXY_ARGS),
                        source_date_epoch=opts.source_date_epoch)


def _store(opts: BuildOptions, store: Store, solver, graph, results, outputs, cache, registries, sink) -> tuple:
    """The solved target as an image: stored and tagged (unless it only goes to registries holding its layers),
    exported to every --output, its cache to every --cache-to; (config, record, names, pushed)."""
    names = tuple(normalize_name(t) for t in opts.tags)
    cache.image(solver, graph.target, outputs, names)
    built = assemble(graph, graph.target, results, epoch=opts.source_date_epoch)
    config, manifest, layers = cache.inline(solver, graph.target, built)
    record = cache.put_image(store, solver, config, manifest, list(layers), names)
    for full in names if cache.stored else ():
        store.tag(full, record.manifest.digest)
    if not cache.stored:
        cache.premount(record, tuple(n for o in outputs for n in (o.names or names)), registries)
    pushed: list = []
    shown = record  # the manifest printed: the stored one, or the one the first export made (lazy layers compressed)
    for n, out in enumerate(outputs):
        exported = export(cache.store_view(store), record, out, names, registries, pushed, sink,
                          compression=opts.compression)
        shown = exported if n == 0 else shown
    cache.export(store, solver, graph.target, registries)
    return config, shown, names, pushed


def _checks(opts: BuildOptions, dockerfile, text: str, unmatched: tuple, patterns: list[str], sink: ev.Sink) -> list:
    """The build checks (builder/checks.py); with `# check=error=true` a warning fails the build before it runs."""
    from builder import checks  # lazy: saves ~5 ms at start-up

    warnings, config = checks.for_build(dockerfile, text, opts.build_args, unmatched, patterns)
    for w in warnings:
        sink(ev.BuildWarning(w.rule, w.message, w.url, w.span.file, w.span.line))
    if warnings and config.error and not opts.check:
        raise checks.failure(warnings)
    return warnings


__all__ = ["BuildOptions", "BuildResult", "build", "PybuildError", "default_root"]
