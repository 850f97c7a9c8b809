"""The typed Dockerfile AST: frozen dataclasses produced by the parser, consumed by builder/.

Contract (grammar → builder):
- Values are *raw*: words keep their quotes and escapes and variables are not expanded. The builder
  expands them with `grammar.shell` where BuildKit does (FROM, COPY/ADD, ENV, LABEL, ARG, EXPOSE,
  USER, WORKDIR, VOLUME, STOPSIGNAL and some flags), because expansion needs ARG/ENV scoping that only
  the planner knows.
- Line continuations are already joined (as BuildKit does: escape char + newline removed, comment
  lines inside a continuation dropped), so `ShellForm.text` is the command as the shell will get it.
- Every node carries a `Span` (1-based lines and columns) so later passes can report file:line:col.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Union


@dataclass(frozen=True, slots=True)
class Span:
    """Where something is in the source: 1-based, end inclusive (end_col is the last column)."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Flag:
    """`--name=value` (value None for a bare `--name`). Quotes already removed as BuildKit does."""

    name: str
    value: str | None
    span: Span


@dataclass(frozen=True, slots=True)
class ShellForm:
    """Shell form: the command text, run as SHELL + [text]."""

    text: str


@dataclass(frozen=True, slots=True)
class ExecForm:
    """Exec (JSON array) form: argv as decoded from JSON."""

    argv: tuple[str, ...]


Command = Union[ShellForm, ExecForm]


@dataclass(frozen=True, slots=True)
class Heredoc:
    """A heredoc attached to RUN/COPY/ADD: `<<[-]["']NAME["']` and its body.

    body: the content lines joined with "\\n", ending with "\\n" (as BuildKit keeps it);
    expand: False when the delimiter was quoted (no variable expansion in the body);
    chomp: True for `<<-` (leading tabs already stripped from `body`).
    """

    name: str
    body: str
    expand: bool
    chomp: bool


@dataclass(frozen=True, slots=True)
class Instruction:
    """Fields common to every instruction.

    keyword: the instruction name as written (case kept); `.name` is the canonical upper-case name.
    original: the logical line as written (continuations joined), for history and error messages.
    flags: the leading `--flags`, in order.
    raw_args: BuildKit's parser-level arguments (JSON decoded, quotes kept; ENV/LABEL as
      key, value, separator triples); what `dump.dump_buildkit` prints. Added by the parser.
    """

    span: Span
    keyword: str
    original: str
    flags: tuple[Flag, ...] = ()
    # BuildKit's low-level argument nodes (parser.Node.Next values), for the conformance dump.
    raw_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.keyword.upper()

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The value of the last `--name` flag (BuildKit keeps the last), or default."""
        found = default
        for f in self.flags:
            if f.name == name:
                found = f.value if f.value is not None else "true"
        return found

    def flag_values(self, name: str) -> tuple[str, ...]:
        """All values of a repeatable flag (`--mount`, `--exclude`), in order."""
        return tuple(f.value or "" for f in self.flags if f.name == name)


@dataclass(frozen=True, slots=True)
class From(Instruction):
    """FROM image [AS name]; `--platform` is among the flags."""

    image: str = ""  # raw, expanded later with the global ARGs
    stage_name: str | None = None  # the AS name, lower-cased as BuildKit does


@dataclass(frozen=True, slots=True)
class Run(Instruction):
    """RUN in shell or exec form, with its heredocs; `--mount`, `--network` are among the flags."""

    command: Command = ShellForm("")
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, slots=True)
class Copy(Instruction):
    """COPY: sources (raw words; a heredoc source is `<<NAME`) and the destination."""

    sources: tuple[str, ...] = ()
    dest: str = ""
    heredocs: tuple[Heredoc, ...] = ()
    json_form: bool = False


@dataclass(frozen=True, slots=True)
class Add(Copy):
    """ADD: as COPY, and a local tar archive source is unpacked into the destination."""


@dataclass(frozen=True, slots=True)
class Cmd(Instruction):
    """CMD: the default command (or ENTRYPOINT's default arguments)."""

    command: Command = ExecForm(())


@dataclass(frozen=True, slots=True)
class Entrypoint(Instruction):
    """ENTRYPOINT: the command the container runs."""

    command: Command = ExecForm(())


@dataclass(frozen=True, slots=True)
class Shell(Instruction):
    """SHELL ["executable", "parameters"]: the shell the later shell forms run with."""

    argv: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Volume(Instruction):
    """VOLUME: paths marked as volumes in the image config (JSON array or words)."""

    paths: tuple[str, ...] = ()  # raw words


@dataclass(frozen=True, slots=True)
class KeyValue:
    """`key=value` of ENV/LABEL (value raw, quotes kept); legacy `ENV k v` has legacy=True."""

    key: str
    value: str
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class Env(Instruction):
    """ENV key=value ... (or legacy ENV key value)."""

    pairs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class Label(Instruction):
    """LABEL key=value ..."""

    pairs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True)
class ArgDecl:
    """One `NAME[=default]` of an ARG line; default raw (quotes kept), None when absent."""

    name: str
    default: str | None


@dataclass(frozen=True, slots=True)
class Arg(Instruction):
    """ARG NAME[=default] ...: build arguments, global before the first FROM."""

    args: tuple[ArgDecl, ...] = ()


@dataclass(frozen=True, slots=True)
class Expose(Instruction):
    """EXPOSE port[/protocol] ..."""

    ports: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class User(Instruction):
    """USER user[:group]."""

    user: str = ""


@dataclass(frozen=True, slots=True)
class Workdir(Instruction):
    """WORKDIR path: created when missing, as docker does."""

    path: str = ""


@dataclass(frozen=True, slots=True)
class StopSignal(Instruction):
    """STOPSIGNAL signal: the signal that stops the container."""

    signal: str = ""


@dataclass(frozen=True, slots=True)
class Healthcheck(Instruction):
    """HEALTHCHECK NONE (command None, disabled True) or HEALTHCHECK [flags] CMD command."""

    command: Command | None = None
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class Onbuild(Instruction):
    """ONBUILD instruction: a trigger stored in the image config for images built FROM this one."""

    trigger: Instruction | None = None  # the nested instruction, parsed
    expression: str = ""  # the trigger text as written, stored in the image config


@dataclass(frozen=True, slots=True)
class Maintainer(Instruction):
    """MAINTAINER name (deprecated): a label-like author field."""

    maintainer: str = ""


@dataclass(frozen=True, slots=True)
class Stage:
    """A FROM and the instructions up to the next FROM."""

    index: int
    name: str | None
    base: From
    instructions: tuple[Instruction, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Dockerfile:
    """The whole file: directives, ARGs before the first FROM, stages, and every instruction in order."""

    filename: str
    directives: tuple[tuple[str, str], ...]  # (lower-cased name, value) in order
    escape: str
    meta_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    instructions: tuple[Instruction, ...] = field(default=())

    def directive(self, name: str) -> str | None:
        for key, value in self.directives:
            if key == name:
                return value
        return None


def fast_init(cls: type) -> type:
    """Give a frozen, slotted dataclass an ``__init__`` with the same signature that fills the slots through
    their member descriptors: the generated one calls ``object.__setattr__`` per field, ~5× slower, and
    building nodes was a third of a parse. Immutability is unchanged (``__setattr__`` still raises). The new
    ``__init__`` is compiled on the class's first instantiation, so importing costs nothing (a cached build
    that never parses pays no ~2 ms for 28 classes)."""

    def first_init(self: Any, *args: Any, **kwargs: Any) -> None:
        _compile_init(cls)(self, *args, **kwargs)

    setattr(cls, "__init__", first_init)
    return cls


def _compile_init(cls: type) -> Callable[..., None]:
    """Make and install ``cls``'s descriptor-filling ``__init__`` (see `fast_init`); returns it."""
    params, body, env = [], [], {}
    for f in fields(cls):
        env[f"_set_{f.name}"] = getattr(cls, f.name).__set__  # the slot's member descriptor
        if f.default is MISSING:
            params.append(f.name)
        else:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(source, env)  # noqa: S102 - code made above from the dataclass's own field names
    init: Callable[..., None] = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)
    return init


for _cls in list(globals().values()):
    if isinstance(_cls, type) and _cls.__module__ == __name__ and is_dataclass(_cls):
        fast_init(_cls)
