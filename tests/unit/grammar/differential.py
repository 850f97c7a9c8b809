"""Shared helpers: compare grammar.parse with the `dockerfile` package (BuildKit v0.12's Go parser).

Both sides are reduced to the same plain view per instruction:
(NAME, sub-instruction NAME, start line, end line, flags, values, json?, heredocs).
"""
from __future__ import annotations

import re

import grammar
from grammar import nodes

try:
    import dockerfile as go_dockerfile
except ImportError:  # pragma: no cover - the package is a test dependency
    go_dockerfile = None

_CHOMP = re.compile(r"(?m)^\t+")


def _json(ins: nodes.Instruction) -> bool | None:
    command = getattr(ins, "command", None)
    if isinstance(ins, (nodes.Copy, nodes.Add)):
        return ins.json_form
    if isinstance(ins, nodes.Healthcheck) and ins.disabled:
        return None  # NONE has no command; Go still flags `HEALTHCHECK NONE []` as JSON, our node does not
    if isinstance(ins, (nodes.Run, nodes.Cmd, nodes.Entrypoint, nodes.Healthcheck)):
        return isinstance(command, nodes.ExecForm)
    return None  # not exposed by our nodes (VOLUME, SHELL) or never JSON


def our_view(text: str) -> list[tuple]:
    df = grammar.parse(text, strict=False)
    out = []
    for ins in df.instructions:
        sub = None
        values = ins.raw_args
        flags = tuple(f"--{f.name}" + (f"={f.value}" if f.value is not None else "") for f in ins.flags)
        heredocs: tuple = tuple((h.name, h.body) for h in getattr(ins, "heredocs", ()))
        json_form = _json(ins)
        kv = isinstance(ins, (nodes.Env, nodes.Label))
        if isinstance(ins, nodes.Onbuild):
            if isinstance(ins.trigger, nodes.Onbuild):
                sub, values, json_form = "ONBUILD", None, None  # v0.12's binding shows ('',) here
            elif ins.trigger is not None:
                sub, values, json_form = ins.trigger.name, ins.trigger.raw_args, _json(ins.trigger)
                kv = isinstance(ins.trigger, (nodes.Env, nodes.Label))
            heredocs = ()  # v0.12's binding drops heredocs of ONBUILD triggers
        if kv:
            values = tuple(v for i, v in enumerate(values) if i % 3 != 2)
        out.append((ins.name, sub, ins.span.line, ins.span.end_line, flags, values, json_form, heredocs))
    return out


def go_view(text: str, ours: list[tuple] | None = None) -> list[tuple]:
    """The Go parser's view; `ours` supplies what the binding does not expose (chomp, json of VOLUME)."""
    out = []
    for i, cmd in enumerate(go_dockerfile.parse_string(text)):
        mine = ours[i] if ours and i < len(ours) else None
        heredocs = tuple((h.name, h.content) for h in cmd.heredocs)
        if mine is not None and len(mine[7]) == len(heredocs):
            # the binding keeps raw bodies; ours strips tabs for <<- (chomp) as nodes.Heredoc says
            heredocs = tuple((n, _CHOMP.sub("", c) if _CHOMP.sub("", c) == mine_body else c)
                             for (n, c), (_, mine_body) in zip(heredocs, mine[7]))
        json_form = cmd.json if (mine is None or mine[6] is not None) and cmd.sub_cmd != "ONBUILD" else None
        sub = cmd.sub_cmd.upper() if cmd.sub_cmd else None
        values = None if sub == "ONBUILD" else tuple(cmd.value)
        out.append((cmd.cmd.upper(), sub, cmd.start_line, cmd.end_line, tuple(map(_unmangle, cmd.flags)),
                    values,
                    json_form, heredocs))
    return out


def _unmangle(flag: str) -> str:
    """The binding decodes flags as Latin-1 (its bug, not BuildKit's): undo that."""
    try:
        return flag.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return flag


def compare(text: str) -> tuple[str, object, object]:
    """('same'|'both-reject'|'differ', ours, theirs) for one Dockerfile text."""
    try:
        ours: object = our_view(text)
    except grammar.DockerfileSyntaxError as e:
        ours = e
    try:
        theirs: object = go_view(text, ours if isinstance(ours, list) else None)
    except go_dockerfile.GoParseError as e:
        theirs = e
    if isinstance(ours, Exception) and isinstance(theirs, Exception):
        return "both-reject", ours, theirs
    return ("same" if ours == theirs else "differ"), ours, theirs
