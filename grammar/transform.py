"""Lark callbacks: one method per rule of dockerfile.lark, tokens → `nodes` instructions.

Each instruction node also keeps BuildKit's low-level argument list (`raw_args`) for the
conformance dump. With `strict` (the default of `grammar.parse`) the checks BuildKit makes in
instructions/parse.go run here too: arity, flags (flags.py), FROM's `AS name`, HEALTHCHECK
types, SHELL's JSON form, ONBUILD triggers, unknown instructions (with a closest-name hint).
"""
from __future__ import annotations

import re
from typing import Any, cast

from lark import Transformer

from grammar import nodes
from grammar.errors import DockerfileSyntaxError, suggest
from grammar.flags import FlagError, check_flags
from grammar.parser import KEYWORDS, Context, Tok

_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*\Z")
_ONBUILD_PREFIX = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.IGNORECASE)
_GO_SPACE = "\t\n\v\f\r \x85\xa0"


def _span(kw: Tok) -> nodes.Span:
    """From the keyword to the end of the logical line; the start line is BuildKit's StartLine
    (the first physical line, even when only an escape character stood there)."""
    ctx: Context = kw.data
    line = ctx.line
    if kw.start_pos == 0 and kw.line != line.start_line:
        return nodes.Span(ctx.prelexed.filename, line.start_line, 1, line.end_line, line.end_col)
    return nodes.Span(ctx.prelexed.filename, kw.line, kw.column, line.end_line, line.end_col)


def _tok_span(ctx: Context, tok: Tok) -> nodes.Span:
    return nodes.Span(ctx.prelexed.filename, tok.line, tok.column, tok.end_line, tok.end_column)


def _fail(kw: Tok, message: str, tok: Tok | None = None, hint: str | None = None) -> DockerfileSyntaxError:
    ctx: Context = kw.data
    span = _tok_span(ctx, tok) if tok is not None else _span(kw)
    source = ctx.prelexed.physical[span.line - 1]
    return DockerfileSyntaxError(span, message, hint=hint, source_line=source, kind="instruction")


def _flag_nodes(ctx: Context, flags: list[Tok]) -> tuple[nodes.Flag, ...]:
    out = []
    for tok in flags:
        name, sep, value = str(tok)[2:].partition("=")
        out.append(nodes.Flag(name, value if sep else None, _tok_span(ctx, tok)))
    return tuple(out)


def _common(kw: Tok, flags: list[Tok], name: str | None = None) -> tuple[nodes.Span, str, str,
                                                                          tuple[nodes.Flag, ...]]:
    """The first fields of every instruction (span, keyword, original, flags), in order, to pass by position;
    validates the flags when parsing strictly."""
    ctx: Context = kw.data
    if flags and ctx.strict and name != "":
        try:
            check_flags(name or kw.upper(), [str(f) for f in flags])
        except FlagError as e:
            raise _fail(kw, e.message, flags[e.index], e.hint) from None
    return _span(kw), kw.value, ctx.line.text[kw.start_pos:], _flag_nodes(ctx, flags) if flags else ()


def _values(toks: list[Tok]) -> tuple[str, ...]:
    if len(toks) == 1 and toks[0].type == "JSON":
        decoded: tuple[str, ...] = toks[0].data
        return decoded
    return tuple([t.value for t in toks])  # the lexer's plain strings (str(t) would copy each)


def _command(toks: list[Tok]) -> nodes.Command | None:
    if not toks:
        return None
    if toks[0].type == "JSON":
        return nodes.ExecForm(toks[0].data)
    return nodes.ShellForm(str(toks[0]))


def _split(children: list[Any]) -> tuple[Tok, list[Tok], list[Tok], tuple[nodes.Heredoc, ...]]:
    """keyword, FLAG tokens, argument tokens, heredocs of one instruction's children."""
    kw = children[0]
    flags: list[Tok] = []
    args: list[Any] = []
    heredocs = []
    for child in children[1:]:
        kind = getattr(child, "type", "")
        if kind == "FLAG":
            flags.append(child)
        elif kind == "HEREDOC":
            heredocs.append(child.data)
        else:
            args.append(child)
    return kw, flags, args, tuple(heredocs)


def _need(kw: Tok, args: Any, message: str, count: int | None = None) -> None:
    if kw.data.strict and (not args if count is None else len(args) != count):
        raise _fail(kw, message)


class ToNodes(Transformer[Tok, Any]):
    """Inline LALR callbacks; stateless (the per-parse context travels on the keyword tokens)."""

    def start(self, children: list[nodes.Instruction]) -> list[nodes.Instruction]:
        return children

    def from_(self, children: list[Any]) -> nodes.From:
        kw, flags, args, _ = _split(children)
        words = _values(args)
        name = None
        if len(words) == 3 and words[1].lower() == "as":
            name = words[2].lower()
            if kw.data.strict and not _STAGE_NAME.match(name):
                raise _fail(kw, f"invalid name for build stage: {_q(words[2])}, name can't start with a number "
                            "or contain symbols", args[2], hint="stage names match [a-z][a-z0-9-_.]*")
        elif len(words) != 1 and kw.data.strict:
            raise _fail(kw, "FROM requires either one or three arguments",
                        hint="FROM [--platform=<platform>] <image> [AS <name>]")
        return nodes.From(*_common(kw, flags), raw_args=words, image=words[0] if words else "",
                          stage_name=name)

    def run(self, children: list[Any]) -> nodes.Run:
        kw, flags, args, heredocs = _split(children)
        command = _command(args) or nodes.ShellForm("")
        return nodes.Run(*_common(kw, flags), raw_args=_values(args), command=command, heredocs=heredocs)

    def cmd(self, children: list[Any]) -> nodes.Cmd:
        kw, flags, args, _ = _split(children)
        return nodes.Cmd(*_common(kw, flags), raw_args=_values(args),
                         command=_command(args) or nodes.ShellForm(""))

    def entrypoint(self, children: list[Any]) -> nodes.Entrypoint:
        kw, flags, args, _ = _split(children)
        return nodes.Entrypoint(*_common(kw, flags), raw_args=_values(args),
                                command=_command(args) or nodes.ShellForm(""))

    def shell(self, children: list[Any]) -> nodes.Shell:
        kw, flags, args, _ = _split(children)
        common = _common(kw, flags)
        values = _values(args)
        _need(kw, values, "SHELL requires at least one argument")
        if kw.data.strict and args[0].type != "JSON":
            raise _fail(kw, "SHELL requires the arguments to be in JSON form", args[0],
                        hint='SHELL ["/bin/sh", "-c"]')
        return nodes.Shell(*common, raw_args=values, argv=values)

    def _copy_instruction(self, children: list[Any], cls: type[nodes.Copy]) -> nodes.Copy:
        kw, flags, args, heredocs = _split(children)
        values = _values(args)
        name = kw.upper()
        if kw.data.strict and len(values) < 2:
            raise _fail(kw, f"{name} requires at least two arguments, but only one was provided. "
                        "Destination could not be determined", hint=f"{name} <src>... <dest>")
        common = _common(kw, flags)
        if kw.data.strict and values and values[-1].startswith("<<") and heredocs_named(values[-1]):
            raise _fail(kw, f"{name} cannot accept a heredoc as a destination")
        json_form = bool(args) and args[0].type == "JSON"
        return cls(*common, raw_args=values, sources=values[:-1], dest=values[-1] if values else "",
                   heredocs=heredocs, json_form=json_form)

    def copy(self, children: list[Any]) -> nodes.Copy:
        return self._copy_instruction(children, nodes.Copy)

    def add(self, children: list[Any]) -> nodes.Add:
        return self._copy_instruction(children, nodes.Add)  # type: ignore[return-value]

    def volume(self, children: list[Any]) -> nodes.Volume:
        kw, flags, args, _ = _split(children)
        values = _values(args)
        _need(kw, values, "VOLUME requires at least one argument")
        common = _common(kw, flags)
        if kw.data.strict and any(not v.strip(_GO_SPACE) for v in values):
            raise _fail(kw, "VOLUME specified can not be an empty string")
        return nodes.Volume(*common, raw_args=values, paths=tuple(v.strip(_GO_SPACE) for v in values))

    def _pair_instruction(self, children: list[Any], cls: type[nodes.Env] | type[nodes.Label]) -> Any:
        kw, flags, args, _ = _split(children)
        common = _common(kw, flags)
        name = kw.upper()
        pairs, raw = [], []
        if args and args[0].type == "LEGACY_KEY":
            pairs.append(nodes.KeyValue(str(args[0]), str(args[1]), legacy=True))
            raw += [str(args[0]), str(args[1]), ""]
        else:
            for tok in args:
                key, _, value = str(tok).partition("=")
                pairs.append(nodes.KeyValue(key, value))
                raw += [key, value, "="]
                if kw.data.strict and not key:
                    raise _fail(kw, f"{name} names can not be blank", tok)
        _need(kw, pairs, f"{name} requires at least one argument")
        return cls(*common, raw_args=tuple(raw), pairs=tuple(pairs))

    def env(self, children: list[Any]) -> nodes.Env:
        node: nodes.Env = self._pair_instruction(children, nodes.Env)
        return node

    def label(self, children: list[Any]) -> nodes.Label:
        node: nodes.Label = self._pair_instruction(children, nodes.Label)
        return node

    def arg(self, children: list[Any]) -> nodes.Arg:
        kw, flags, args, _ = _split(children)
        decls = []
        for tok in args:
            key, sep, value = str(tok).partition("=")
            if kw.data.strict and not key:
                raise _fail(kw, "ARG names can not be blank", tok)
            decls.append(nodes.ArgDecl(key, value if sep else None))
        _need(kw, decls, "ARG requires at least one argument")
        return nodes.Arg(*_common(kw, flags), raw_args=_values(args), args=tuple(decls))

    def expose(self, children: list[Any]) -> nodes.Expose:
        kw, flags, args, _ = _split(children)
        _need(kw, args, "EXPOSE requires at least one argument")
        return nodes.Expose(*_common(kw, flags), raw_args=_values(args), ports=_values(args))

    def _single_instruction(self, children: list[Any], cls: type, field: str) -> Any:
        kw, flags, args, _ = _split(children)
        _need(kw, args, f"{kw.upper()} requires exactly one argument", 1)
        value = str(args[0]) if args else ""
        return cls(*_common(kw, flags), raw_args=_values(args), **{field: value})

    def user(self, children: list[Any]) -> nodes.User:
        node: nodes.User = self._single_instruction(children, nodes.User, "user")
        return node

    def workdir(self, children: list[Any]) -> nodes.Workdir:
        node: nodes.Workdir = self._single_instruction(children, nodes.Workdir, "path")
        return node

    def stopsignal(self, children: list[Any]) -> nodes.StopSignal:
        node: nodes.StopSignal = self._single_instruction(children, nodes.StopSignal, "signal")
        return node

    def maintainer(self, children: list[Any]) -> nodes.Maintainer:
        node: nodes.Maintainer = self._single_instruction(children, nodes.Maintainer, "maintainer")
        return node

    def healthcheck(self, children: list[Any]) -> nodes.Healthcheck:
        kw, flags, args, _ = _split(children)
        values = (str(args[0]),) + _values(args[1:]) if args else ()
        _need(kw, values, "HEALTHCHECK requires at least one argument")
        kind = values[0].upper() if values else ""
        if kind == "NONE":
            if kw.data.strict and len(values) > 1:
                raise _fail(kw, "HEALTHCHECK NONE takes no arguments", args[1])
            return nodes.Healthcheck(*_common(kw, flags, ""), raw_args=values, command=None, disabled=True)
        common = _common(kw, flags)
        command = _command(args[1:])
        if kw.data.strict and kind != "CMD":
            raise _fail(kw, f"Unknown type {_q(kind)} in HEALTHCHECK (try CMD)", args[0],
                        hint="HEALTHCHECK [options] CMD <command>, or HEALTHCHECK NONE")
        if kw.data.strict and len(values) < 2:
            raise _fail(kw, "Missing command after HEALTHCHECK CMD")
        return nodes.Healthcheck(*common, raw_args=values, command=command)

    def onbuild(self, children: list[Any]) -> nodes.Onbuild:
        kw, flags, rest, _ = _split(children)
        trigger = cast("nodes.Instruction | None", rest[0] if rest else None)  # ONBUILD's child is a node
        ctx: Context = kw.data
        if ctx.strict:
            if trigger is None:
                raise _fail(kw, "ONBUILD requires at least one argument")
            if trigger.name == "ONBUILD":
                raise _fail(kw, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if trigger.name in ("MAINTAINER", "FROM"):
                raise _fail(kw, f"{trigger.name} isn't allowed as an ONBUILD trigger")
        common = _common(kw, flags)
        expression = _ONBUILD_PREFIX.sub("", ctx.line.text[kw.start_pos:], count=1)
        for heredoc in ctx.line.heredocs:
            expression += "\n" + heredoc.body + heredoc.name
        return nodes.Onbuild(*common, trigger=trigger, expression=expression)

    def unknown(self, children: list[Any]) -> nodes.Instruction:
        kw, flags, _, _ = _split(children)
        if kw.data.strict:
            match = suggest(str(kw), [k.upper() for k in KEYWORDS])
            raise _fail(kw, f"unknown instruction {_q(str(kw))}", kw,
                        hint=f"did you mean {match}?" if match else None)
        return nodes.Instruction(*_common(kw, flags, ""), raw_args=("",))


# lark looks rules up by name; "from" is a Python keyword
setattr(ToNodes, "from", ToNodes.from_)


def heredocs_named(word: str) -> bool:
    """Whether a COPY/ADD argument is a heredoc reference (`<<EOF`, `<<-"EOF"`...)."""
    from grammar.heredocs import heredocs_from_line  # lazy: saves <1 ms at start-up (its modules are loaded by then)
    return bool(heredocs_from_line(word))


def _q(text: str) -> str:
    from grammar.dump import go_quote  # lazy: saves <1 ms at start-up (its modules are loaded by then)
    return go_quote(text)
