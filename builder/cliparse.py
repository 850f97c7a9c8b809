"""Argument parsing shared by every sub-command: a parser whose mistakes are usage errors (exit 2, with a
"did you mean"), the global options, plain tables that never truncate, and output that survives a closed pipe.

Global options (`--root`, `--debug`, `--log-level`) are accepted before the sub-command and after it, as docker's
and podman's are: every sub-command's parser has them (`add_common`), and `cli.main` moves the ones given first
behind the sub-command's name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from builder.errors import UsageError
from builder.options import add_common as _add_root_debug

LOG_LEVELS = ("debug", "info", "warn", "error", "fatal", "panic")
GLOBAL_FLAGS = {"--root": True, "--log-level": True, "--debug": False, "-D": False,  # flag → takes a value
                "--snapshotter": True}


class CommandLineError(UsageError):
    """A command line pybuild cannot read: unknown sub-command or flag, missing argument. Exit status 2."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=2)


def suggest(word: str, choices) -> str | None:
    """The closest of ``choices`` (edit distance < 3, BuildKit's rule) or None."""
    from grammar.errors import levenshtein  # lazy: saves ~36 ms at start-up

    best = min(sorted(choices), key=lambda c: levenshtein(word, c), default=None)
    if best is None or best == word or levenshtein(word, best) >= 3:
        return None
    return best


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations, whose errors raise CommandLineError (rendered once by cli.main)."""

    def __init__(self, prog: str, description: str | None = None, **kw: Any) -> None:
        super().__init__(prog=prog, description=description, allow_abbrev=False, **kw)

    def error(self, message: str):
        raise CommandLineError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`")

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            word = extra[0]
            if word.startswith("-") and word != "-":
                flag = word.split("=", 1)[0]
                close = suggest(flag, [o for o in self._option_string_actions if o.startswith("--")])
                raise CommandLineError(f"{self.prog}: unknown flag {flag}",
                                       hint=f"did you mean {close}?" if close else f"see `{self.prog} --help`")
            raise CommandLineError(f"{self.prog}: unexpected argument {word!r}", hint=f"see `{self.prog} --help`")
        return ns


def add_common(p: argparse.ArgumentParser) -> None:
    """--root, --debug (-D) and --log-level, on every sub-command."""
    _add_root_debug(p)
    p.add_argument("-D", dest="debug", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-level", choices=LOG_LEVELS, default="warn", help="how much pybuild says on stderr")


def parser(prog: str, description: str | None = None) -> Parser:
    """A sub-command's parser with the global options."""
    p = Parser(prog, description)
    add_common(p)
    return p


def split_globals(argv: list[str]) -> tuple[list[str], list[str]]:
    """(global options given before the sub-command, the rest)."""
    taken: list[str] = []
    i = 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag not in GLOBAL_FLAGS:
            break
        if GLOBAL_FLAGS[flag] and "=" not in argv[i]:
            if i + 1 >= len(argv):
                raise CommandLineError(f"pybuild: flag {flag} needs a value")
            taken += argv[i:i + 2]
            i += 2
        else:
            taken.append("--debug" if flag == "-D" else argv[i])
            i += 1
    return taken, argv[i:]


# --- version and help -------------------------------------------------------------------------------------------


def version() -> str:
    # lazy: saves ~29 ms at start-up
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pybuild")
    except PackageNotFoundError:
        return "unknown"


def cmd_version(argv: list[str]) -> int:
    p = Parser("pybuild version", "Show pybuild's version.")
    p.add_argument("--format", help="json, or a template such as '{{.Version}}'")
    add_common(p)
    args = p.parse_args(argv)
    import platform  # lazy: saves ~2 ms at start-up

    info = {"Version": version(), "Python": platform.python_version(), "Os": "linux",
            "Arch": os.uname().machine, "Kernel": os.uname().release}
    if args.format:
        from builder.gotemplate import format_item  # lazy: saves ~3 ms at start-up

        print(format_item(args.format, info))
    else:
        print(f"pybuild version {info['Version']} (python {info['Python']}, {info['Os']}/{info['Arch']})")
    return 0


def usage(commands: dict[str, str]) -> str:
    """`pybuild --help`: every sub-command with one line."""
    width = max(map(len, commands))
    lines = ["usage: pybuild [--root DIR] [--debug] [--log-level LEVEL] COMMAND [ARGS...]",
             "       pybuild [build flags] CONTEXT        (build is the default command)", "",
             "A daemonless Dockerfile build engine.", "", "Commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, summary in commands.items()]
    lines += ["", "Global options (before or after the command):",
              "  --root DIR         store directory (default: $PYBUILD_ROOT, else /var/lib/pybuild for root,",
              "                     ~/.local/share/pybuild (XDG_DATA_HOME) for other users: rootless)",
              "  -D, --debug        show Python tracebacks for internal errors",
              "  --log-level LEVEL  debug, info, warn (default), error",
              "  --snapshotter S    auto (default), overlayfs or fuse-overlayfs: how layers are mounted",
              "  -v, --version      print the version", "",
              "Run 'pybuild help COMMAND' or 'pybuild COMMAND --help' for a command's flags."]
    return "\n".join(lines)


# --- output ------------------------------------------------------------------------------------------------


def print_table(headers: list[str], rows: list[list[str]], out=None) -> None:
    """docker's tabwriter layout (columns padded, three spaces apart), never truncated or wrapped."""
    out = out or sys.stdout
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        out.write("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")


def print_json(value: Any, lines: bool = False) -> None:
    """JSON for scripts: one document, or with ``lines`` one compact object per line (docker's --format json)."""
    if lines:
        for item in value:
            sys.stdout.write(json.dumps(item, separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(json.dumps(value, indent=2) + "\n")
