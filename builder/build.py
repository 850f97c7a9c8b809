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
from builder.export.oci_layout import write_layout
from builder.options import default_root
from builder.plan.bases import normalize_name, resolve_base, split_tag
from builder.plan.planner import plan
from builder.progress import events as ev
from builder.solve import SolveOptions, Solver

@dataclass
class BuildOptions:
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


@dataclass(frozen=True, slots=True)
class BuildResult:
    image_id: str
    manifest_digest: str
    names: tuple[str, ...]


def parse_output(spec: str) -> dict[str, str]:
    """`type=oci,dest=DIR` → {"type": "oci", "dest": "DIR"}; a bare path means a local OCI layout."""
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"invalid --output {spec!r}: expected key=value pairs",
                             hint="use --output type=oci,dest=DIR")
        fields[key.strip()] = value.strip()
    if fields.get("type") != "oci" or not fields.get("dest"):
        raise UsageError(f"unsupported --output {spec!r}", hint="supported: --output type=oci,dest=DIR")
    return fields


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


def build(opts: BuildOptions, sink: ev.Sink, cancel: threading.Event | None = None) -> BuildResult:
    import shutil
    import tempfile

    if opts.context != "-":
        return _build(opts, sink, cancel)
    workdir = tempfile.mkdtemp(prefix="pybuild-stdin-")
    try:
        return _build(stdin_context(opts, workdir), sink, cancel)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _build(opts: BuildOptions, sink: ev.Sink, cancel: threading.Event | None = None) -> BuildResult:
    import grammar
    from cache import Store

    started = time.monotonic()
    text, name = read_dockerfile(opts)
    dockerfile = grammar.parse(text, filename=name)
    outputs = [parse_output(o) for o in opts.outputs]
    if not os.path.isdir(opts.context):
        raise UsageError(f"build context {opts.context!r} is not a directory")
    patterns = ignore_patterns(opts)
    store = Store.open(opts.root)
    workdir = tempfile.mkdtemp(prefix="pybuild-secrets-") if opts.secrets else ""
    try:
        graph = plan(dockerfile, build_args=opts.build_args, target=opts.target,
                     resolve_image=lambda ref: resolve_base(store, ref))
        options = SolveOptions(context_dir=os.path.abspath(opts.context), use_cache=not opts.no_cache,
                               compression=opts.compression, jobs=opts.jobs, dockerfile_lines=text.splitlines(),
                               ignore_patterns=patterns, excluded=_excluder(patterns),
                               explain=opts.explain_cache, secrets=_secrets(opts, workdir))
        results = Solver(store, graph, options, sink, cancel).solve(graph.target)
        config, manifest, layers = assemble(graph, graph.target, results)
        record = store.put_image(manifest, config, list(layers))
        names = tuple(normalize_name(t) for t in opts.tags)
        for full in names:
            store.tag(full, record.manifest.digest)
        for out in outputs:
            tagged = [(full, split_tag(full)[1]) for full in names]
            write_layout(store, out["dest"], record.manifest.digest, record.manifest.size,
                         record.config.digest, [l.blob.digest for l in layers], tagged)
    finally:
        store.close()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    if opts.iidfile:
        Path(opts.iidfile).write_text(image_id)
    sink(ev.BuildDone(image_id, record.manifest.digest, time.monotonic() - started))
    return BuildResult(image_id, record.manifest.digest, names)


__all__ = ["BuildOptions", "BuildResult", "build", "PybuildError", "default_root"]
