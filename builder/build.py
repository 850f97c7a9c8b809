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


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build produced: the image id, manifest digest and the names it was given."""

    image_id: str
    manifest_digest: str
    names: tuple[str, ...]
    stdout_used: bool = False  # an output wrote to stdout: the summary must go elsewhere
    pushed: tuple = ()  # builder.export.push.PushResult per pushed name


@dataclass(frozen=True, slots=True)
class Output:
    """One `--output`: where the built image goes besides the local store.

    type "oci" (directory layout at dest, or with ``tar`` the layout as one tar file), "docker" (docker-archive
    file at dest), "-" = stdout for either tar, "registry" (push
    every name) or "image" (only tag in the store). An empty ``names`` means the `-t` names."""

    type: str
    dest: str = ""
    names: tuple[str, ...] = ()
    push: bool = False
    insecure: bool = False
    tar: bool = False  # oci/docker: one tar file (or stdout) rather than a layout directory


OUTPUT_KEYS = {"oci": {"dest", "name", "tar"}, "docker": {"dest", "name", "tar"},
               "registry": {"name", "push", "registry.insecure"}, "image": {"name", "push", "registry.insecure"}}
OUTPUT_HINT = ("supported: type=oci,dest=DIR|FILE.tar|-[,tar=true|false] | type=docker,dest=FILE.tar|- | "
               "type=registry[,name=HOST/REPO:TAG] (or --push)")


def _flag(spec: str, key: str, value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0", ""):
        raise UsageError(f"invalid --output {spec!r}: {key}={value!r} is not true or false", hint=OUTPUT_HINT)
    return value.lower() in ("true", "1", "")


def parse_output(spec: str) -> Output:
    """buildx's syntax: CSV `key=value` fields (`"name=a,b"` quotes a list), e.g. `type=docker,dest=app.tar`."""
    import csv

    fields: dict[str, str] = {}
    for part in next(csv.reader([spec], skipinitialspace=True), []):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"invalid --output {spec!r}: expected key=value pairs", hint=OUTPUT_HINT)
        fields[key.strip().lower()] = value.strip()
    kind = fields.pop("type", "")
    if kind not in OUTPUT_KEYS:
        what = f"type {kind!r} is unsupported" if kind else "type= is missing"
        raise UsageError(f"invalid --output {spec!r}: {what}", hint=OUTPUT_HINT)
    unknown = sorted(set(fields) - OUTPUT_KEYS[kind])
    if unknown:
        raise UsageError(f"invalid --output {spec!r}: type={kind} does not take {', '.join(unknown)}",
                         hint=OUTPUT_HINT)
    names = tuple(n.strip() for n in fields.get("name", "").split(",") if n.strip())
    push = _flag(spec, "push", fields["push"]) if "push" in fields else kind == "registry"
    if kind == "registry" and not push:
        raise UsageError(f"invalid --output {spec!r}: type=registry always pushes (push=false)",
                         hint="use type=image,push=false to only tag the image in the local store")
    insecure = _flag(spec, "registry.insecure", fields["registry.insecure"]) if "registry.insecure" in fields \
        else False
    if kind in ("oci", "docker") and not fields.get("dest"):
        raise UsageError(f"invalid --output {spec!r}: type={kind} needs dest=" + ("DIR" if kind == "oci" else "FILE"),
                         hint="there is no docker daemon to load into: the image is already in pybuild's store; "
                              "write an archive with dest=FILE.tar (or dest=- for stdout) and `docker load` it"
                         if kind == "docker" else None)
    if kind == "image" and push:
        kind = "registry"
    dest = fields.get("dest", "")
    # buildx writes oci/docker outputs as a tar unless tar=false; pybuild's type=oci,dest=DIR (issue 2) stays a
    # layout directory, so without tar= a tar is written for dest=- and dest=*.tar only.
    tar = _flag(spec, "tar", fields["tar"]) if "tar" in fields else kind == "docker" or dest == "-" \
        or dest.endswith(".tar")
    if kind == "docker" and not tar:
        raise UsageError(f"invalid --output {spec!r}: type=docker is always a tar (docker load's format)",
                         hint="for a directory use type=oci,tar=false,dest=DIR")
    if dest == "-" and not tar:
        raise UsageError(f"invalid --output {spec!r}: a layout directory cannot go to stdout",
                         hint="drop tar=false to stream the layout as a tar, or give dest=DIR")
    return Output(kind, dest=dest, names=names, push=push, insecure=insecure, tar=tar and kind in ("oci", "docker"))


def push_outputs(outputs: list[Output], push: bool) -> list[Output]:
    """`--push` is `--output type=registry` for the -t names, unless a registry output is already given."""
    if push and not any(o.type == "registry" for o in outputs):
        return [*outputs, Output("registry", push=True)]
    return outputs


def export(store, record, out: Output, tags: tuple[str, ...], registries=None, pushed: list | None = None,
           sink: ev.Sink | None = None) -> None:
    """Send the stored image ``record`` to one --output; ``tags`` are the normalised -t names; ``registries``
    returns the build's builder.export.registry.Registries; ``sink`` hears the pushed blobs' progress.

    Registry pushes append a PushResult to ``pushed``; repositories pushed earlier in the same registry are
    offered as cross-repository mount sources."""
    names = tuple(normalize_name(n) for n in out.names) or tags
    if out.type == "image":
        for full in names:
            store.tag(full, record.manifest.digest)
        return
    if out.type == "registry":
        from builder.export.push import push_image
        from builder.export.reference import Reference

        done = pushed if pushed is not None else []
        for full in names:
            ref = Reference.parse(full)
            sources = tuple(dict.fromkeys(Reference.parse(p.name).repository for p in done
                                          if Reference.parse(p.name).domain == ref.domain))
            progress = None if sink is None else \
                (lambda digest, current, total, image=full: sink(ev.TransferProgress("push", image, digest, current,
                                                                                       total)))
            done.append(push_image(store, record, full, registries(), insecure=out.insecure,
                                   mount_sources=sources, progress=progress))
        return
    docker = out.type == "docker"  # the archive docker load reads: the OCI layout tar plus manifest.json
    if out.tar and out.dest == "-":
        from builder.export.docker_archive import write_archive_to

        if sys.stdout.isatty():
            raise UsageError(f"refusing to write {'a docker archive' if docker else 'an OCI layout tar'} to a "
                             "terminal", hint="redirect stdout (`> image.tar`) or use dest=FILE.tar")
        write_archive_to(sys.stdout.buffer, store, record, list(names), docker_manifest=docker)
        sys.stdout.buffer.flush()
        return
    try:
        if out.tar:
            from builder.export.docker_archive import write_archive

            write_archive(store, out.dest, record, list(names), docker_manifest=docker)
        elif out.type == "oci":
            write_layout(store, out.dest, record.manifest.digest, record.manifest.size, record.config.digest,
                         [l.blob.digest for l in record.layers], [(full, split_tag(full)[1]) for full in names])
    except OSError as exc:
        raise PybuildError(f"cannot write --output type={out.type},dest={out.dest}: {exc.strerror or exc}"
                           + (f" ({exc.filename})" if getattr(exc, "filename", None) else ""),
                           reference="export-failed") from exc


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


def write_metadata(path: str, image_id: str, manifest, names: tuple[str, ...]) -> None:
    """--metadata-file: buildx's keys for an image build, written to a temp file and renamed."""
    import json

    doc = {"containerimage.config.digest": image_id, "containerimage.digest": manifest.digest,
           "containerimage.descriptor": {"mediaType": manifest.media_type, "digest": manifest.digest,
                                         "size": manifest.size}}
    if names:
        doc["image.name"] = ",".join(names)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_outputs(outputs: list[Output], tags: list[str]) -> None:
    """Fail before building: a push needs a name, names must parse, one stdout."""
    from builder.export.reference import Reference

    if sum(o.dest == "-" for o in outputs) > 1:
        raise UsageError("only one --output can write to stdout (dest=-)")
    for out in outputs:
        if out.type == "registry" and not (out.names or tags):
            raise UsageError("nothing to push: the image has no name",
                             hint="give one with -t HOST/REPO:TAG, or --output type=registry,name=HOST/REPO:TAG")
        for name in out.names if out.type in ("registry", "image") else ():
            Reference.parse(name)
    for tag in tags:
        Reference.parse(tag)


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
        graph = plan(dockerfile, build_args=opts.build_args, target=opts.target, network=opts.network,
                     labels=opts.labels,
                     resolve_image=lambda ref: resolve_base(store, ref, pull=opts.pull, fetch=fetch))
        options = SolveOptions(context_dir=os.path.abspath(opts.context), use_cache=not opts.no_cache,
                               no_cache_stages=_stage_indices(graph, opts.no_cache_filter),
                               compression=opts.compression, jobs=opts.jobs, dockerfile_lines=text.splitlines(),
                               ignore_patterns=patterns, excluded=_excluder(patterns),
                               explain=opts.explain_cache, secrets=_secrets(opts, workdir),
                               ssh=agents.sockets if agents is not None else None)
        results = Solver(store, graph, options, sink, cancel).solve(graph.target)
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
    try:
        if opts.iidfile:
            what = f"--iidfile {opts.iidfile}"
            Path(opts.iidfile).write_text(image_id)
        if opts.metadata_file:
            what = f"--metadata-file {opts.metadata_file}"
            write_metadata(opts.metadata_file, image_id, record.manifest, names)
    except OSError as exc:
        raise UsageError(f"cannot write {what}: {exc.strerror or exc}",
                         hint=f"the image was built and stored (image id {image_id})") from None
    sink(ev.BuildDone(image_id, record.manifest.digest, time.monotonic() - started))
    return BuildResult(image_id, record.manifest.digest, names,
                       stdout_used=any(o.dest == "-" for o in outputs), pushed=tuple(pushed))


__all__ = ["BuildOptions", "BuildResult", "build", "PybuildError", "default_root"]
