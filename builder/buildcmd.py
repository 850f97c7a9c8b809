"""`pybuild build`: its flags, the fully cached fast path, the build and what it prints at the end.

Kept import-light: a build that the fast path replays (builder/fastpath.py) imports nothing else of pybuild.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from builder import fastpath, startup
from builder.cliparse import CommandLineError, Parser
from builder.cliparse import add_common as _root_arg
from builder.errors import UsageError
from builder.options import add_limit_flags, resources

RAWJSON = False  # set by a build with --progress rawjson: builder/cli.py then prints its error as a JSON event

PROGRESS_MODES = ("auto", "tty", "plain", "quiet", "rawjson")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="pybuild build", description="Build an OCI image from a Dockerfile.")
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
                        "| type=registry[,name=HOST/REPO:TAG][,registry.insecure=true] | type=local,dest=DIR (or DIR) "
                        "| type=tar,dest=FILE | type=docker (docker load) | type=image; dest=- is stdout")
    p.add_argument("--push", action="store_true", help="push every -t name (= --output type=registry)")
    p.add_argument("--pull", action="store_true",
                   help="resolve FROM images in their registry even when the local store has them")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="speak plain HTTP to this registry (localhost and 127.0.0.0/8 always are; "
                        "also $PYBUILD_INSECURE_REGISTRIES=h1,h2)")
    p.add_argument("--registry-deadline", type=_positive_float, metavar="SECONDS",
                   help="seconds one registry request may take, its body included (default: 3600)")
    p.add_argument("--registry-min-rate", type=int, metavar="BYTES",
                   help="bytes a second a registry request must average over each minute (default: 1024; 0: none)")
    p.add_argument("--iidfile", help="write the image id to this file")
    p.add_argument("--progress", default=None, choices=PROGRESS_MODES,
                   help="how to show the steps (default: $BUILDKIT_PROGRESS, else auto)")
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
    _network_flags(p)
    p.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET|KEY[,KEY]]",
                   help="an SSH agent for RUN --mount=type=ssh: ID alone forwards $SSH_AUTH_SOCK")
    p.add_argument("--check", action="store_true",
                   help="run only the build checks (BuildKit's lint rules); exit 1 when one finds something")
    _cache_and_context_flags(p)
    p.add_argument("--rm", action="store_true", help="accepted as in buildx: no intermediate containers are kept")
    p.add_argument("--force-rm", action="store_true", help="accepted as in buildx: see --rm")
    p.add_argument("--load", action="store_true", help="also load the image into docker (= --output type=docker)")
    p.add_argument("--on-error", choices=("fail", "shell"), default="fail",
                   help="shell: after a RUN fails, a shell in its container (needs a terminal), then the error")
    add_limit_flags(p)
    _root_arg(p)
    return p



def _network_flags(p: argparse.ArgumentParser) -> None:
    """RUN's default network, the bridge's subnet, /etc/hosts entries (builder/sandbox/network.py, netpool.py)."""
    p.add_argument("--network", choices=("default", "bridge", "none", "host"), default="default",
                   help="network of RUN instructions that do not set --network: default (= bridge: a namespace "
                        "per RUN on the pybuild0 bridge, with NAT to the outside), none (only loopback) or host")
    p.add_argument("--bridge-subnet", default=os.environ.get("PYBUILD_BRIDGE_SUBNET") or None, metavar="CIDR",
                   help="subnet of the pybuild0 bridge when it is created (default: the first of docker's "
                        "default pools that no host route overlaps; also $PYBUILD_BRIDGE_SUBNET)")
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP",
                   help="add a line to RUN's /etc/hosts (repeatable; IP host-gateway = the bridge's address)")


def _cache_and_context_flags(p: argparse.ArgumentParser) -> None:
    """Remote caches (builder/remotecache), entitlements and named contexts (builder/plan/entitle.py, contexts.py)."""
    p.add_argument("--cache-from", action="append", default=[], metavar="type=registry,ref=HOST/REPO:TAG",
                   help="also look steps up in this cache (repeatable): type=registry,ref=... (a cache, or an image "
                        "with an inline cache; ref=HOST/REPO without a tag: a shared cache repository, looked up "
                        "by step key) | type=local,src=DIR; an unreadable cache is a warning")
    p.add_argument("--cache-to", action="append", default=[], metavar="type=registry,ref=HOST/REPO:TAG",
                   help="write the build's cache (repeatable): type=registry,ref=...[,mode=min|max]"
                        "[,ignore-error=true][,cache-mounts=ID1,ID2|all] | type=local,dest=DIR | type=inline")
    p.add_argument("--allow", action="append", default=[], metavar="network.host|security.insecure",
                   help="grant an entitlement (buildx): RUN --network=host / RUN --security=insecure")
    p.add_argument("--build-context", action="append", default=[],
                   metavar="NAME=DIR|oci-layout:///PATH[:TAG]|docker-image://REF",
                   help="a named context for FROM NAME, COPY --from=NAME and RUN --mount from=NAME (buildx)")

def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


# rootless: argv → the memo looked up (and missed) before the user namespace was entered (builder/cli.py)
_LOOKED_UP: dict[tuple[str, ...], fastpath.Memo | None] = {}


def replay_early(argv: list[str]) -> int | None:
    """Rootless: replay a memoised fully cached build before entering the user namespace, whose fork and
    newuidmap/newgidmap cost more than the replay; None when it must be built (the lookup is kept for that)."""
    started = time.monotonic()
    args, build_args, labels, mode = _parse(argv)
    memo = fastpath.memo_for(args, build_args, labels) if fastpath.qualifies(args, _defaults()) else None
    doc = fastpath.replay(memo) if memo is not None else None
    if doc is not None:
        return _replay(doc, args, mode, started)
    _LOOKED_UP[tuple(argv)] = memo
    return None


def _parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str], dict[str, str], str]:
    """(arguments, build args, labels, progress mode) of a build command line."""
    global RAWJSON
    RAWJSON = rawjson_requested(argv)  # a usage error below is then a JSON event too
    args = build_parser().parse_args(argv)
    build_args, labels = _build_args_and_labels(args)
    mode = "quiet" if args.quiet else args.progress or progress_from_env()
    if args.on_error == "shell":
        if not sys.stdin.isatty():
            raise CommandLineError("--on-error=shell needs a terminal on stdin",
                                   hint="run the build from a terminal, or drop --on-error")
        mode = "plain" if mode in ("auto", "tty") else mode  # a live view would draw over the shell
    RAWJSON = mode == "rawjson"
    return args, build_args, labels, mode


def cmd_build(argv: list[str]) -> int:
    started = time.monotonic()
    args, build_args, labels, mode = _parse(argv)
    outputs = args.output + (["type=docker"] if args.load else [])  # buildx: --load = --output type=docker
    if tuple(argv) in _LOOKED_UP:  # rootless: replay_early found no memo to replay
        memo = _LOOKED_UP.pop(tuple(argv))
    else:
        memo = fastpath.memo_for(args, build_args, labels) if fastpath.qualifies(args, _defaults()) else None
        doc = fastpath.replay(memo) if memo is not None else None
        if doc is not None:  # a fully cached rebuild of unchanged inputs: nothing else is imported
            return _replay(doc, args, mode, started)
    from builder.prestart import Helpers  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    helpers = None if args.check else Helpers()  # its start overlaps the imports, parsing and planning below
    # lazy: saves ~166 ms at start-up
    from builder.build import BuildOptions, build
    from builder.progress.display import make_display

    startup.loaded()  # the build's modules are in: the collector resumes (builder/startup.py)
    sink = make_display(mode)
    opts = BuildOptions(context=args.context, dockerfile=args.dockerfile, tags=args.tag, build_args=build_args,
                        target=args.target, no_cache=args.no_cache, compression=args.compression,
                        outputs=outputs, iidfile=args.iidfile, root=args.root, jobs=max(1, args.jobs),
                        explain_cache=args.explain_cache, secrets=args.secret, ssh=args.ssh, push=args.push,
                        pull=args.pull, insecure_registries=args.insecure_registry, labels=labels,
                        registry_deadline=args.registry_deadline, registry_min_rate=args.registry_min_rate,
                        platform=args.platform, metadata_file=args.metadata_file,
                        no_cache_filter=[s.strip() for v in args.no_cache_filter for s in v.split(",") if s.strip()],
                        network="default" if args.network == "bridge" else args.network,
                        cache_from=args.cache_from, cache_to=args.cache_to, check=args.check,
                        allow=args.allow, build_contexts=args.build_context, on_error=args.on_error,
                        resources=resources(args), bridge_subnet=args.bridge_subnet, add_hosts=args.add_host)
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
        from builder.checks import summary  # lazy: saves ~52 ms at start-up

        warned = summary(list(result.warnings))
    if memo is not None:
        memo.save(result, warned)
    return _summary(mode, warned, result.image_id, result.manifest_digest, result.names, result.stdout_used,
                    result.pushed, result.cache_exports)


def rawjson_requested(argv: list[str]) -> bool:
    """Whether the command line asks for rawjson, read before argparse (which may reject it): the last --progress
    (else $BUILDKIT_PROGRESS) says rawjson and no -q/--quiet overrides it."""
    mode = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--progress" and i + 1 < len(argv):
            mode = argv[i + 1]
        elif arg.startswith("--progress="):
            mode = arg.partition("=")[2]
        elif arg in ("-q", "--quiet"):
            return False
    if mode is None:
        mode = os.environ.get("BUILDKIT_PROGRESS", "").strip().lower()
    return mode == "rawjson"


def _build_args_and_labels(args) -> tuple[dict[str, str], dict[str, str]]:
    """--build-arg (NAME alone takes it from the environment, as docker) and --label, checked."""
    build_args = {}
    for item in args.build_arg:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"--build-arg {item!r}: the name is empty", hint="use --build-arg NAME=VALUE (or NAME "
                                                                            "alone to take it from the environment)")
        if sep:
            build_args[key] = value
        elif key in os.environ:
            build_args[key] = os.environ[key]
    labels = dict(item.partition("=")[::2] for item in args.label)  # docker: "k" alone is k=""
    if "" in labels:
        empty = next(item for item in args.label if not item.partition("=")[0])
        raise UsageError(f"--label {empty!r}: the key is empty", hint="use --label KEY=VALUE")
    return build_args, labels


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
        # lazy: saves ~16 ms at start-up
        from builder.progress import events as ev
        from builder.progress.display import make_display

        sink = make_display(mode)
        try:
            for event in doc["events"]:
                fields = {k: v for k, v in event.items() if k not in ("type", "ts")}
                if event["type"] == "BuildSummary":
                    fields["elapsed"] = time.monotonic() - started
                sink(getattr(ev, event["type"])(**fields))
            sink(ev.BuildDone(doc["image_id"], doc["manifest"], time.monotonic() - started))
        finally:
            getattr(sink, "close", lambda: None)()
    return _summary(mode, doc["summary"], doc["image_id"], doc["manifest"], doc["names"], False, ())


def _defaults() -> dict:
    """Each build flag's default: the fast path (builder/fastpath.py) treats a flag left at it as not given."""
    return {action.dest: action.default for action in build_parser()._actions}


def _summary(mode: str, warned, image_id: str, manifest: str, names, stdout_used: bool, pushed,
             cache_exports=()) -> int:
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
        for written in cache_exports:
            print(f"cache:    {written.summary()}", file=out)
    return 0


def _report_checks(warnings, opts) -> int:
    """`build --check`, as buildx prints it: each warning with its lines, then the count; 1 when any."""
    # lazy: saves ~158 ms at start-up
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


def progress_from_env() -> str:
    """buildx's BUILDKIT_PROGRESS sets the default --progress."""
    mode = os.environ.get("BUILDKIT_PROGRESS", "").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise CommandLineError(f"BUILDKIT_PROGRESS={mode!r} is not a progress mode",
                               hint=f"use one of {', '.join(PROGRESS_MODES)}")
    return mode
