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

from builder.cliparse import CommandLineError, Parser, cmd_version, split_globals, suggest, usage
from builder.cliparse import add_common as _root_arg
from builder import startup
from builder.errors import PybuildError
from builder.buildcmd import _defaults, build_parser, cmd_build, progress_from_env  # noqa: F401 (re-exported)
from builder.buildcmd import replay_early

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


def cmd_run(argv: list[str]) -> int:
    from builder.runcmd import RunOptions, read_env_files, run_image  # lazy: saves ~51 ms at start-up

    args = run_parser().parse_args(argv)
    opts = RunOptions(image=args.image, args=args.args, entrypoint=args.entrypoint,
                      env=[*read_env_files(args.env_file), *args.env],
                      workdir=args.workdir, user=args.user, volumes=args.volume, network=args.network,
                      hostname=args.hostname or args.name, root=args.root, read_only=args.read_only,
                      tmpfs=args.tmpfs, tty=args.tty)
    return run_image(opts)


def cmd_parse(argv: list[str]) -> int:
    # lazy: saves ~34 ms at start-up
    import json

    import grammar
    from grammar import dump

    p = Parser(prog="pybuild parse", description="Print the parsed Dockerfile.")
    p.add_argument("-f", "--file", dest="dockerfile", default="Dockerfile")
    p.add_argument("--json", action="store_true", help="JSON for tools (default: BuildKit's AST dump)")
    _root_arg(p)
    args = p.parse_args(argv)
    # lazy: saves ~2 ms at start-up
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
    from builder.sandbox.bridge import NetworkSetupError, prune  # lazy: saves ~100 ms at start-up

    try:
        print(prune())
    except NetworkSetupError as exc:
        raise PybuildError(str(exc), hint=exc.hint, reference="network-in-use") from None
    return 0


def cmd_store(name: str, argv: list[str]) -> int:
    from builder import storecmd  # lazy: saves ~3 ms at start-up

    return storecmd.main(name, argv)


def render_error(exc: BaseException) -> str:
    """One screen: what, where (the offending lines), how to fix."""
    if isinstance(exc, PybuildError):
        from grammar.errors import MAX_LINE, MAX_MESSAGE, printable, shorten  # lazy: saves ~33 ms at start-up

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
        from grammar import DockerfileSyntaxError  # lazy: saves ~33 ms at start-up
        types.append(DockerfileSyntaxError)
    except ImportError:
        pass
    try:
        from cache.errors import StoreError  # lazy: saves ~45 ms at start-up
        types.append(StoreError)
    except ImportError:
        pass
    try:
        from builder.sandbox.runner import SandboxError  # lazy: saves ~28 ms at start-up
        types.append(SandboxError)
    except ImportError:
        pass
    return tuple(types)


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
    from builder import layers  # lazy: saves ~41 ms at start-up

    return layers.main(argv)


def dispatch(command: str, rest: list[str]) -> int:
    """Run one sub-command with its own arguments."""
    handlers = {"build": cmd_build, "run": cmd_run, "parse": cmd_parse, "version": cmd_version, "help": cmd_help,
                "layers": cmd_layers, "network": cmd_network}
    if command != "build":  # a build resumes it once its own modules are in (builder/buildcmd.py)
        startup.loaded()
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


def _replayed_early(argv: list[str]) -> int | None:
    """Rootless: a fully cached build replayed by the fast path without entering the user namespace."""
    command, rest = route(argv)
    if command != "build":
        return None
    code = replay_early(rest)
    sys.stdout.flush()
    return code


def _quiet_closed_pipe() -> int:
    """stdout's reader went away (`| head`): stop quietly with status 0, as coreutils do under SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return 0


def _rawjson() -> bool:
    """The build ran with --progress rawjson (builder/buildcmd.py): its error is one more JSON event on stderr."""
    from builder import buildcmd  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    return buildcmd.RAWJSON


def _print_error(text: str, code: int) -> int:
    print(text, file=sys.stderr)
    return code


def _fail(message: str, context: str | None, hint: str | None, code: int) -> int:
    """The build's error as the rawjson stream's last event (nothing but JSON on that stream)."""
    import json  # lazy: saves <1 ms at start-up (its modules are loaded by then)

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
            if os.geteuid() != 0 and (code := _replayed_early(argv)) is not None:
                return code
            from builder.rootless import enter  # lazy: saves ~10 ms at start-up

            enter()  # euid != 0: continue as root of a user namespace (rootless mode); a no-op for root
        command, rest = route(argv)
        code = dispatch(command, rest)
        sys.stdout.flush()
    except BrokenPipeError:
        return _quiet_closed_pipe()
    except KeyboardInterrupt:
        return _fail("interrupted", None, None, 130) if _rawjson() else _print_error("error: interrupted", 130)
    except _known_error_types() as exc:
        code = getattr(exc, "exit_code", 1)
        if _rawjson():
            return _fail(getattr(exc, "message", str(exc)), getattr(exc, "context", None), getattr(exc, "hint", None),
                         code)
        return _print_error(render_error(exc), code)
    except (OSError, ValueError) as exc:
        if debug:
            raise
        if _rawjson():
            return _fail(str(exc), None, "run again with --debug for a traceback", 1)
        return _print_error(f"error: {exc}\nhint: run again with --debug for a traceback", 1)
    except SystemExit as exc:  # argparse's --help
        return exc.code if isinstance(exc.code, int) else 0
    return code


def run() -> None:
    """`pybuild` and `python -m builder`: main(), then exit without the interpreter's teardown."""
    import atexit  # lazy: saves <1 ms at start-up (a built-in module)

    from builder import classcode  # lazy: saves <1 ms at start-up (builder/__init__.py loaded it)

    atexit.register(classcode.save)  # the dataclass code compiled by this run, for the next one
    end(main())


def end(code: int) -> None:
    """Exit with ``code`` as the interpreter would, less its teardown (~15-25 ms of freeing every module and object
    a build loaded): non-daemon threads are joined and atexit handlers run first, as at a normal exit, then
    stdout and stderr are flushed. If a flush fails (a closed pipe), the normal exit reports it as it always has."""
    if not isinstance(code, int):
        sys.exit(code)
    threading = sys.modules.get("threading")
    shutdown = getattr(threading, "_shutdown", None)
    if threading is not None and shutdown is None:  # another interpreter's threading: the normal exit joins
        sys.exit(code)
    if shutdown is not None:
        shutdown()
    import atexit  # lazy: saves <1 ms at start-up (a built-in module)

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code & 0xFF)


if __name__ == "__main__":
    run()
