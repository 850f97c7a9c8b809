"""The `pybuild` command line. The only place that maps errors to output and exit codes (STYLE.md habit 5).

    pybuild [build] [-f Dockerfile] [-t name:tag]... [--build-arg K=V]... [--target STAGE] [--no-cache]
                    [--compression gzip|zstd] [--output type=oci|docker|registry,...] [--push] [--pull]
                    [--insecure-registry HOST] [--iidfile F] [--progress MODE] CONTEXT
    pybuild run [--rm] [--entrypoint CMD] [-e K=V] [-w DIR] [-u USER] [-v HOST:DIR] IMAGE [ARG...]
    pybuild parse [-f Dockerfile] [--json]
    pybuild images | history IMAGE | cache ls|du|inspect|prune
    pybuild network prune
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from builder.cliparse import CommandLineError, Parser, cmd_version, split_globals, suggest, usage
from builder.cliparse import add_common as _root_arg
from builder import fastpath
from builder.errors import PybuildError, UsageError
from builder.options import add_limit_flags, resources

# sub-command → one line for `pybuild --help` (in the order shown)
COMMANDS = {
    "build": "Build an image from a Dockerfile (the default: `pybuild -t NAME .`)",
    "run": "Run a command in a new container of a stored image",
    "images": "List images",
    "tag": "Give an image another name",
    "rmi": "Remove images (names; the content goes at the next prune)",
    "inspect": "Show an image as docker image inspect does",
    "history": "Show the history of an image",
    "layers": "Each layer's changes, the bytes later layers hide, dive's efficiency and CI gate",
    "image": "Manage images: ls, rm, tag, prune, inspect, history, save, load, pull, push, import",
    "save": "Write images to a docker (or OCI) archive",
    "load": "Load images from a docker or OCI archive or layout",
    "pull": "Pull an image from a registry",
    "push": "Push an image to a registry",
    "export": "Write an image's filesystem as one tar",
    "import": "Make an image of a rootfs tarball",
    "login": "Log in to a registry (docker's config.json or credential helper)",
    "logout": "Log out from a registry",
    "system": "Store-wide information: df",
    "cache": "Build cache: ls, du, inspect, prune",
    "network": "The bridge network of RUN: prune what killed builds left",
    "parse": "Print how the Dockerfile was parsed",
    "version": "Show pybuild's version",
    "help": "Help on a sub-command",
}
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
    p.add_argument("--network", choices=("default", "bridge", "none", "host"), default="default",
                   help="network of RUN instructions that do not set --network: default (= bridge: a namespace "
                        "per RUN on the pybuild0 bridge, with NAT to the outside), none (only loopback) or host")
    p.add_argument("--bridge-subnet", default=os.environ.get("PYBUILD_BRIDGE_SUBNET") or None, metavar="CIDR",
                   help="subnet of the pybuild0 bridge when it is created (default: the first of docker's "
                        "default pools that no host route overlaps; also $PYBUILD_BRIDGE_SUBNET)")
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP",
                   help="add a line to RUN's /etc/hosts (repeatable; IP host-gateway = the bridge's address)")
    p.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET|KEY[,KEY]]",
                   help="an SSH agent for RUN --mount=type=ssh: ID alone forwards $SSH_AUTH_SOCK")
    p.add_argument("--check", action="store_true",
                   help="run only the build checks (BuildKit's lint rules); exit 1 when one finds something")
    p.add_argument("--cache-from", action="append", default=[], metavar="type=registry,ref=HOST/REPO:TAG",
                   help="also look steps up in this cache (repeatable): type=registry,ref=... (a cache, or an image "
                        "with an inline cache) | type=local,src=DIR; an unreadable cache is a warning")
    p.add_argument("--cache-to", action="append", default=[], metavar="type=registry,ref=HOST/REPO:TAG",
                   help="write the build's cache (repeatable): type=registry,ref=...[,mode=min|max]"
                        "[,ignore-error=true] | type=local,dest=DIR | type=inline")
    p.add_argument("--allow", action="append", default=[], metavar="network.host|security.insecure",
                   help="grant an entitlement (buildx): RUN --network=host / RUN --security=insecure")
    p.add_argument("--build-context", action="append", default=[],
                   metavar="NAME=DIR|oci-layout:///PATH[:TAG]|docker-image://REF",
                   help="a named context for FROM NAME, COPY --from=NAME and RUN --mount from=NAME (buildx)")
    p.add_argument("--rm", action="store_true", help="accepted as in buildx: no intermediate containers are kept")
    p.add_argument("--force-rm", action="store_true", help="accepted as in buildx: see --rm")
    p.add_argument("--load", action="store_true", help="also load the image into docker (= --output type=docker)")
    p.add_argument("--on-error", choices=("fail", "shell"), default="fail",
                   help="shell: after a RUN fails, a shell in its container (needs a terminal), then the error")
    add_limit_flags(p)
    _root_arg(p)
    return p


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def run_parser() -> argparse.ArgumentParser:
    p = Parser(prog="pybuild run", description="Run a command in a container of a stored image.")
    p.add_argument("--rm", action="store_true", help="accepted for docker compatibility: containers never persist")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open (it always is)")
    p.add_argument("-t", "--tty", action="store_true", help="run the command on a pseudo-terminal")
    p.add_argument("--entrypoint", help="override the image's ENTRYPOINT")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    p.add_argument("-w", "--workdir")
    p.add_argument("-u", "--user")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:DIR[:ro]")
    p.add_argument("--network", choices=("none", "host"), default="none")
    p.add_argument("--hostname")
    p.add_argument("--name", help="the container's name: its hostname unless --hostname is given")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="K=V lines (K alone: from pybuild's environment; # comments), as docker reads them")
    p.add_argument("--read-only", action="store_true", help="mount the image's filesystem read-only")
    p.add_argument("--tmpfs", action="append", default=[], metavar="DIR[:OPTIONS]",
                   help="a tmpfs at DIR (options as mount's, e.g. size=64m,mode=1777)")
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
    mode = "quiet" if args.quiet else args.progress or progress_from_env()
    outputs = args.output + (["type=docker"] if args.load else [])  # buildx: --load = --output type=docker
    if args.on_error == "shell":
        if not sys.stdin.isatty():
            raise CommandLineError("--on-error=shell needs a terminal on stdin",
                                   hint="run the build from a terminal, or drop --on-error")
        mode = "plain" if mode in ("auto", "tty") else mode  # a live view would draw over the shell
    global _RAWJSON
    _RAWJSON = mode == "rawjson"
    memo = fastpath.memo_for(args, build_args, labels) if fastpath.qualifies(args, _defaults()) else None
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
        from builder.checks import summary

        warned = summary(list(result.warnings))
    if memo is not None:
        memo.save(result, warned)
    return _summary(mode, warned, result.image_id, result.manifest_digest, result.names, result.stdout_used,
                    result.pushed, result.cache_exports)


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
    from builder.runcmd import RunOptions, read_env_files, run_image

    args = run_parser().parse_args(argv)
    opts = RunOptions(image=args.image, args=args.args, entrypoint=args.entrypoint,
                      env=[*read_env_files(args.env_file), *args.env],
                      workdir=args.workdir, user=args.user, volumes=args.volume, network=args.network,
                      hostname=args.hostname or args.name, root=args.root, read_only=args.read_only,
                      tmpfs=args.tmpfs, tty=args.tty)
    return run_image(opts)


def cmd_parse(argv: list[str]) -> int:
    import json

    import grammar
    from grammar import dump

    p = Parser(prog="pybuild parse", description="Print the parsed Dockerfile.")
    p.add_argument("-f", "--file", dest="dockerfile", default="Dockerfile")
    p.add_argument("--json", action="store_true", help="JSON for tools (default: BuildKit's AST dump)")
    _root_arg(p)
    args = p.parse_args(argv)
    from builder.context.inputs import MAX_DOCKERFILE, decode, read_bounded_stream, read_confined

    data = read_bounded_stream(sys.stdin.buffer, what="the Dockerfile", limit=MAX_DOCKERFILE) \
        if args.dockerfile == "-" else read_confined(args.dockerfile, what="Dockerfile", limit=MAX_DOCKERFILE)
    text = decode(data, f"Dockerfile {args.dockerfile}")
    df = grammar.parse(text, filename=args.dockerfile)
    if args.json:
        print(json.dumps(dump.to_json(df), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(dump.dump_buildkit(df))
    return 0


def cmd_network(argv: list[str]) -> int:
    """`pybuild network prune`: remove the bridge and NAT rule RUN's default network leaves (none in use)."""
    p = argparse.ArgumentParser(prog="pybuild network", description="Manage RUN's default (bridge) network.")
    p.add_argument("action", choices=("prune",), help="prune: remove the pybuild0 bridge and its NAT rule")
    p.parse_args(argv)
    from builder.sandbox.bridge import NetworkSetupError, prune

    try:
        print(prune())
    except NetworkSetupError as exc:
        raise PybuildError(str(exc), hint=exc.hint, reference="network-in-use") from None
    return 0


def cmd_store(name: str, argv: list[str]) -> int:
    from builder import storecmd

    return storecmd.main(name, argv)


def render_error(exc: BaseException) -> str:
    """One screen: what, where (the offending lines), how to fix."""
    if isinstance(exc, PybuildError):
        from grammar.errors import MAX_LINE, MAX_MESSAGE, printable, shorten

        lines = [f"error: {printable(shorten(exc.message, MAX_MESSAGE))}"]  # bounded: an input may be huge
        if exc.context:
            lines.extend(printable(shorten(line, 2 * MAX_LINE)) for line in exc.context.splitlines()[-200:])
        if exc.hint:
            lines.append(f"hint: {printable(shorten(exc.hint, MAX_MESSAGE))}")
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


def progress_from_env() -> str:
    """buildx's BUILDKIT_PROGRESS sets the default --progress."""
    mode = os.environ.get("BUILDKIT_PROGRESS", "").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise CommandLineError(f"BUILDKIT_PROGRESS={mode!r} is not a progress mode",
                               hint=f"use one of {', '.join(PROGRESS_MODES)}")
    return mode


def cmd_help(argv: list[str]) -> int:
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        print(usage(COMMANDS))
        return 0
    if words[0] not in COMMANDS:
        raise _unknown_command(words[0])
    if words[0] == "help":
        print(usage(COMMANDS))
        return 0
    return dispatch(words[0], [*words[1:2], "--help"])


def _unknown_command(word: str) -> CommandLineError:
    close = suggest(word, list(COMMANDS))
    return CommandLineError(f"unknown command {word!r} (and not a build context directory)",
                            hint=f"did you mean `pybuild {close}`?" if close else "see `pybuild --help`")


def cmd_layers(argv: list[str]) -> int:
    from builder import layers

    return layers.main(argv)


def dispatch(command: str, rest: list[str]) -> int:
    """Run one sub-command with its own arguments."""
    handlers = {"build": cmd_build, "run": cmd_run, "parse": cmd_parse, "version": cmd_version, "help": cmd_help,
                "layers": cmd_layers, "network": cmd_network}
    if command in handlers:
        return handlers[command](rest)
    return cmd_store(command, rest)


def route(argv: list[str]) -> tuple[str, list[str]]:
    """(sub-command, its arguments with the leading global options moved behind its name)."""
    taken, rest = split_globals(argv)
    if not rest:
        return ("help", []) if not taken else ("build", taken)
    word = rest[0]
    if word in ("-h", "--help"):
        return "help", []
    if word in ("-v", "--version"):
        return "version", taken
    if word in COMMANDS:
        args = rest[1:]
        if word in ("cache", "image", "system") and args and not args[0].startswith("-"):
            return word, [args[0], *taken, *args[1:]]
        return word, [*taken, *args]
    if word.startswith("-") or os.path.exists(word) or "/" in word:  # a path: the build context
        return "build", [*taken, *rest]
    raise _unknown_command(word)


def _quiet_closed_pipe() -> int:
    """stdout's reader went away (`| head`): stop quietly with status 0, as coreutils do under SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return 0


_RAWJSON = False  # set by a build with --progress rawjson: its error is one more JSON event on stderr


def _print_error(text: str, code: int) -> int:
    print(text, file=sys.stderr)
    return code


def _fail(message: str, context: str | None, hint: str | None, code: int) -> int:
    """The build's error as the rawjson stream's last event (nothing but JSON on that stream)."""
    import json

    event = {"type": "BuildError", "message": message, "context": context, "hint": hint, "exit": code}
    print(json.dumps(event, ensure_ascii=False), file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or "-D" in argv or "--log-level=debug" in argv or \
        any(a == "--log-level" and b == "debug" for a, b in zip(argv, argv[1:]))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if argv and argv[0] not in ("help", "version", "--help", "-h", "--version"):
            from builder.rootless import enter

            enter()  # euid != 0: continue as root of a user namespace (rootless mode); a no-op for root
        command, rest = route(argv)
        code = dispatch(command, rest)
        sys.stdout.flush()
    except BrokenPipeError:
        return _quiet_closed_pipe()
    except KeyboardInterrupt:
        return _fail("interrupted", None, None, 130) if _RAWJSON else _print_error("error: interrupted", 130)
    except _known_error_types() as exc:
        code = getattr(exc, "exit_code", 1)
        if _RAWJSON:
            return _fail(getattr(exc, "message", str(exc)), getattr(exc, "context", None), getattr(exc, "hint", None),
                         code)
        return _print_error(render_error(exc), code)
    except (OSError, ValueError) as exc:
        if debug:
            raise
        if _RAWJSON:
            return _fail(str(exc), None, "run again with --debug for a traceback", 1)
        return _print_error(f"error: {exc}\nhint: run again with --debug for a traceback", 1)
    except SystemExit as exc:  # argparse's --help
        return exc.code if isinstance(exc.code, int) else 0
    return code


if __name__ == "__main__":
    sys.exit(main())
