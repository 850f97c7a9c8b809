"""Renderings of a parsed Dockerfile: BuildKit's `result` dump and a JSON-ready dict.

`dump_buildkit` reproduces parser.Node.Dump() of BuildKit's low-level AST, one
`(keyword ["--flags"] "arg" ...)` line per instruction (see conformance/README.md §1), from the
`raw_args` the parser keeps on every instruction. `to_json` is what `pybuild parse --json` prints.
"""
from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

from grammar import nodes

_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
          '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """Go's strconv.Quote: double quotes, Go escapes, printable Unicode kept as is."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # Go strings are UTF-8: a surrogate cannot occur, it would be U+FFFD
        elif _go_printable(ch):
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _go_printable(ch: str) -> bool:
    # Go's IsPrint: letters, marks, numbers, punctuation, symbols and U+0020 (other spaces are not)
    return unicodedata.category(ch)[0] in "LMNPS"


def dump_instruction(ins: nodes.Instruction) -> str:
    """One instruction as BuildKit's Node.Dump() prints it (without the surrounding parentheses)."""
    parts = [ins.keyword.lower()]
    if ins.flags:
        flags = [f"--{f.name}" + (f"={f.value}" if f.value is not None else "") for f in ins.flags]
        parts.append("[" + " ".join(go_quote(f) for f in flags) + "]")
    if isinstance(ins, nodes.Onbuild):
        if ins.trigger is not None:
            parts.append("(" + dump_instruction(ins.trigger) + ")")
    else:
        parts.extend(go_quote(a) for a in ins.raw_args)
    return " ".join(parts).strip()


def dump_buildkit(df: nodes.Dockerfile) -> str:
    """The whole file in BuildKit's `result` format: one line per instruction, newline-terminated."""
    return "".join(f"({dump_instruction(ins)})\n" for ins in df.instructions)


def to_json(df: nodes.Dockerfile) -> dict[str, Any]:
    """A JSON-ready dict of the parse: directives, meta args, stages and their instructions."""
    return {
        "filename": df.filename,
        "escape": df.escape,
        "directives": [{"name": k, "value": v} for k, v in df.directives],
        "meta_args": [_instruction(a) for a in df.meta_args],
        "stages": [
            {"index": s.index, "name": s.name, "span": _plain(s.span), "base": _instruction(s.base),
             "instructions": [_instruction(i) for i in s.instructions]}
            for s in df.stages
        ],
    }


def _instruction(ins: nodes.Instruction) -> dict[str, Any]:
    out: dict[str, Any] = {"instruction": ins.name}
    for field in dataclasses.fields(ins):
        out[field.name] = _plain(getattr(ins, field.name))
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, nodes.Instruction):
        return _instruction(value)
    if isinstance(value, (nodes.ShellForm, nodes.ExecForm)):
        kind = "shell" if isinstance(value, nodes.ShellForm) else "exec"
        return {"form": kind, **{f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
