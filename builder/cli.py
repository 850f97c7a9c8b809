"""The `pybuild` command line. The only place that maps errors to output and exit codes (STYLE.md habit 5).

    pybuild [build] [-f Dockerfile] [-t name:tag]... [--build-arg K=V]... [--target STAGE] [--no-cache]
                    [--compression gzip|zstd] [--output type=oci|docker|registry,...] [--push] [--pull]
                    [--insecure-registry HOST] [--iidfile F] [--progress MODE] CONTEXT
    pybuild run [--rm] [--entrypoint CMD] [-e K=V] [-w DIR] [-u USER] [-v HOST:DIR] IMAGE [ARG...]
    pybuild parse [-f Dockerfile] [--json]
    pybuild images | history IMAGE | cache ls|du|inspect|prune
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from builder import fastpath
from builder.errors import PybuildError, UsageError
from builder.options import add_common as _root_arg

COMMANDS = ("build", "run", "parse", "images", "history", "cache", "layers")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pybuild build", description="Build an OCI image from a Dockerfile.")
    p.add_argument("context", help="build context directory")
    p.add_argument("-f", "--file", dest="dockerfile", help="Dockerfile path (default: CONTEXT/Dockerfile; - = stdin)")
    p.add_argument("-t", "--tag", action="append", default=[], help="name:tag for the image (repeatable)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="set a build-time ARG")
    p.add_argument("--target", help="build this stage and what it needs")
    p.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip", help="layer compression")
    p.add_argument("-o", "--output", action="append", default=[], metavar="type=...,dest=...",
                   help="also export (repeatable): type=oci,dest=DIR (layout directory) | type=oci,dest=FILE.tar "
                        "(the layout as one tar; also tar=true, dest=-) | type=docker,dest=FILE.tar (docker load) "
                        "| type=registry[,name=HOST/REPO:TAG][,registry.insecure=true]; dest=- is stdout")
    p.add_argument("--push", action="store_true", help="push every -t name (= --output type=registry)")
    p.add_argument("--pull", action="store_true",
                   help="resolve FROM images in their registry even when the local store has them")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="speak plain HTTP to this registry (localhost and 127.0.0.0/8 always are; "
                        "also $PYBUILD_INSECURE_REGISTRIES=h1,h2)")
    p.add_argument("--iidfile", help="write the image id to this file")
    p.add_argument("--progress", default="auto", choices=("auto", "tty", "plain", "quiet", "rawjson"))
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="steps run at once (default: CPUs)")
    p.add_argument("--explain-cache", action="store_true", help="say why each step hit or missed the cache")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=FILE|env=VAR",
                   help="a secret for RUN --mount=type=secret (never stored in the image or the cache)")
    p.add_argument("--platform", default="", metavar="OS/ARCH",
                   help="accepted when it is this machine's platform (pybuild does not emulate others)")
    p.add_argument("--metadata-file", help="write the image's digests and names as JSON (buildx's keys)")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE[,STAGE]",
                   help="do not use the cache for the steps of these stages")
    p.add_argument("--label", action="append", default=[], metavar="K=V",
                   help="set a label on the image (over the Dockerfile's LABEL)")
    p.add_argument("--network", choices=("default", "none", "host"), default="default",
                   help="network of RUN instructions that do not set --network (default: none, an isolated "
                        "namespace with only loopback)")
    p.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET|KEY[,KEY]]",
                   help="an SSH agent for RUN --mount=type=ssh: ID alone forwards $SSH_AUTH_SOCK")
    p.add_argument("--check", action="store_true",
                   help="run only the build checks (BuildKit's lint rules); exit 1 when one finds something")
    _root_arg(p)
    return p


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pybuild run", description="Run a command in a container of a stored image.")
    p.add_argument("--rm", action="store_true", help="accepted for docker compatibility: containers never persist")
    p.add_argument("--entrypoint", help="override the image's ENTRYPOINT")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:DIR[:ro]")
    p.add_argument("--network", choices=("none", "host"), default="none")
    p.add_argument("--hostname")
    p.add_argument("image")
    p.add_argument("args", nargs=argparse.REMAINDER)
    _root_arg(p)
    return p


def cmd_build(argv: list[str]) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    build_args = {}
    for item in args.build_arg:
        key, sep, value = item.partition("=")
        if sep:
            build_args[key] = value
        elif key in os.environ:
            build_args[key] = os.environ[key]
    labels = dict(item.partition("=")[::2] for item in args.label)  # docker: "k" alone is k=""
    if "" in labels:
        empty = next(item for item in args.label if not item.partition("=")[0])
        raise UsageError(f"--label {empty!r}: the key is empty", hint="use --label KEY=VALUE")
    mode = "quiet" if args.quiet else args.progress
    memo = fastpath.memo_for(args, build_args, labels) if fastpath.qualifies(args) else None
    doc = fastpath.replay(memo) if memo is not None else None
    if doc is not None:  # a fully cached rebuild of unchanged inputs: nothing else is imported
        return _replay(doc, args, mode, started)
    from builder.prestart import Helpers

    helpers = None if args.check else Helpers()  # its start overlaps the imports, parsing and planning below
    from builder.build import BuildOptions, build
    from builder.progress.display import make_display

    sink = make_display(mode)
    opts = BuildOptions(context=args.context, dockerfile=args.dockerfile, tags=args.tag, build_args=build_args,
                        target=args.target, no_cache=args.no_cache, compression=args.compression,
                        outputs=args.output, iidfile=args.iidfile, root=args.root, jobs=max(1, args.jobs),
                        explain_cache=args.explain_cache, secrets=args.secret, ssh=args.ssh, push=args.push,
                        pull=args.pull, insecure_registries=args.insecure_registry, labels=labels,
                        platform=args.platform, metadata_file=args.metadata_file,
                        no_cache_filter=[s.strip() for v in args.no_cache_filter for s in v.split(",") if s.strip()],
                        network="none" if args.network == "default" else args.network, check=args.check)
    cancel = threading.Event()
    previous = {sig: signal.signal(sig, _interrupt_handler(cancel)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = build(opts, memo.observe(sink) if memo is not None else sink, cancel, memo=memo, helpers=helpers)
    finally:
        getattr(sink, "close", lambda: None)()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.check:
        return _report_checks(result.warnings, opts)
    warned = None
    if result.warnings:
        from builder.checks import summary

        warned = summary(list(result.warnings))
    if memo is not None:
        memo.save(result, warned)
    return _summary(mode, warned, result.image_id, result.manifest_digest, result.names, result.stdout_used,
                    result.pushed)


def _replay(doc: dict, args, mode: str, started: float) -> int:
    """Show a memoised fully cached build as the full path would (builder/fastpath.py)."""
    if args.iidfile:
        try:
            with open(args.iidfile, "w", encoding="utf-8") as f:
                f.write(doc["image_id"])
        except OSError as exc:
            raise UsageError(f"cannot write --iidfile {args.iidfile}: {exc.strerror or exc}",
                             hint=f"the image was built and stored (image id {doc['image_id']})") from None
    if not fastpath.show(doc, mode, time.monotonic() - started, sys.stderr):
        from builder.progress import events as ev
        from builder.progress.display import make_display

        sink = make_display(mode)
        try:
            for event in doc["events"]:
                fields = {k: v for k, v in event.items() if k not in ("type", "ts")}
                sink(getattr(ev, event["type"])(**fields))
            sink(ev.BuildDone(doc["image_id"], doc["manifest"], time.monotonic() - started))
        finally:
            getattr(sink, "close", lambda: None)()
    return _summary(mode, doc["summary"], doc["image_id"], doc["manifest"], doc["names"], False, ())


def _summary(mode: str, warned, image_id: str, manifest: str, names, stdout_used: bool, pushed) -> int:
    """The end of a build: the checks' summary, then the image id (and digest, names, pushes)."""
    if warned and mode != "rawjson":  # rawjson carried them as BuildWarning events
        print(warned, file=sys.stderr)
    result = argparse.Namespace(image_id=image_id, manifest_digest=manifest, names=names, pushed=pushed)
    out = sys.stderr if stdout_used else sys.stdout  # stdout may be carrying a docker archive
    if mode == "quiet":
        print(result.image_id, file=out)
    else:
        print(f"image id: {result.image_id}", file=out)
        print(f"manifest: {result.manifest_digest}", file=out)
        for name in result.names:
            print(f"tagged:   {name}", file=out)
        for pushed in result.pushed:
            print(f"pushed:   {pushed.summary()}", file=out)
    return 0


def _report_checks(warnings, opts) -> int:
    """`build --check`, as buildx prints it: each warning with its lines, then the count; 1 when any."""
    from builder.build import read_dockerfile
    from builder.checks import render

    if not warnings:
        print("Check complete, no warnings found.", file=sys.stderr)
        return 0
    lines = read_dockerfile(opts)[0].splitlines() if opts.context != "-" else None
    print(render(list(warnings), lines), file=sys.stderr)
    count = f"{len(warnings)} warning{'s have' if len(warnings) != 1 else ' has'}"
    print(f"\nCheck complete, {count} been found!", file=sys.stderr)
    return 1


def _interrupt_handler(cancel: threading.Event):
    """Ctrl-C/SIGTERM during a build: set `cancel` at once (the runner kills running containers within 0.05 s,
    whichever thread waits on them), then unwind the main thread with KeyboardInterrupt. Further signals are
    ignored while the steps clean up: a second Ctrl-C must not abandon mounts or temporary directories."""
    def handler(signum, frame) -> None:
        if cancel.is_set():
            return
        cancel.set()
        raise KeyboardInterrupt
    return handler


def cmd_run(argv: list[str]) -> int:
    from builder.runcmd import RunOptions, run_image

    args = run_parser().parse_args(argv)
    opts = RunOptions(image=args.image, args=args.args, entrypoint=args.entrypoint, env=args.env,
                      workdir=args.workdir, user=args.user, volumes=args.volume, network=args.network,
                      hostname=args.hostname, root=args.root)
    return run_image(opts)


def cmd_parse(argv: list[str]) -> int:
    import json

    import grammar
    from grammar import dump

    p = argparse.ArgumentParser(prog="pybuild parse", description="Print the parsed Dockerfile.")
    p.add_argument("-f", "--file", dest="dockerfile", default="Dockerfile")
    p.add_argument("--json", action="store_true", help="JSON for tools (default: BuildKit's AST dump)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    text = sys.stdin.read() if args.dockerfile == "-" else open(args.dockerfile, encoding="utf-8").read()
    df = grammar.parse(text, filename=args.dockerfile)
    if args.json:
        print(json.dumps(dump.to_json(df), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(dump.dump_buildkit(df))
    return 0


def cmd_store(name: str, argv: list[str]) -> int:
    from builder import storecmd

    return storecmd.main(name, argv)


def render_error(exc: BaseException) -> str:
    """One screen: what, where (the offending lines), how to fix."""
    if isinstance(exc, PybuildError):
        lines = [f"error: {exc.message}"]
        if exc.context:
            lines.append(exc.context)
        if exc.hint:
            lines.append(f"hint: {exc.hint}")
        return "\n".join(lines)
    render = getattr(exc, "render", None)
    if callable(render):  # grammar.DockerfileSyntaxError
        return "error: " + render()
    return f"error: {exc}"


def _known_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [PybuildError]
    try:
        from grammar import DockerfileSyntaxError
        types.append(DockerfileSyntaxError)
    except ImportError:
        pass
    try:
        from cache.errors import StoreError
        types.append(StoreError)
    except ImportError:
        pass
    try:
        from builder.sandbox.runner import SandboxError
        types.append(SandboxError)
    except ImportError:
        pass
    return tuple(types)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = argv[0] if argv and argv[0] in COMMANDS else "build"
    rest = argv[1:] if argv and argv[0] in COMMANDS else argv
    try:
        if command == "build":
            code = cmd_build(rest)
        elif command == "run":
            code = cmd_run(rest)
        elif command == "parse":
            code = cmd_parse(rest)
        elif command == "layers":
            from builder import layers

            code = layers.main(rest)
        else:
            code = cmd_store(command, rest)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except _known_error_types() as exc:
        print(render_error(exc), file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except (OSError, ValueError) as exc:
        if debug:
            raise
        print(f"error: {exc}\nhint: run again with --debug for a traceback", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
