"""Dockerfile text → typed AST (`grammar.nodes`), BuildKit-compatible.

    df = grammar.parse(text, filename="Dockerfile")
    for stage in df.stages: ...

`grammar.parse_memo` gives the same AST from an on-disk memo when that exact parse was done before (memo.py).

Pipeline: prelex.py (directives, continuations, heredocs, source map) → parser.py (lexer +
lark LALR over dockerfile.lark) → transform.py (nodes, BuildKit's instruction checks) → stages.
Any rejected input raises DockerfileSyntaxError, and nothing else.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grammar import nodes
from grammar.errors import DockerfileSyntaxError
from grammar.memo import parse_memo  # noqa: F401  (re-exported)
from grammar.nodes import *  # noqa: F401,F403  (re-exported: grammar.Run, grammar.Span, ...)

if TYPE_CHECKING:  # both load lark: imported when parsing, not when grammar is imported
    from grammar.prelex import Prelexed
    from grammar.transform import ToNodes

__all__ = ["parse", "parse_memo", "DockerfileSyntaxError", "nodes"] + [n for n in dir(nodes) if n[:1].isupper()]


def parse(text: str, *, filename: str = "Dockerfile", strict: bool = True) -> nodes.Dockerfile:
    """Parse a Dockerfile.

    strict=True (default) applies BuildKit's instructions.Parse checks as well (unknown
    instructions, arity, flags, stage names, instructions before the first FROM).
    strict=False accepts whatever BuildKit's low-level parser accepts (used for the
    conformance dump); stages are then built on a best-effort basis.
    """
    prelex, run_parser, transformer = _PIPELINE or _load()
    try:
        prelexed = prelex(text, filename)
        instructions = tuple(run_parser(prelexed, strict, transformer))
    except DockerfileSyntaxError:
        raise
    except RecursionError:
        raise DockerfileSyntaxError(nodes.Span(filename, 1, 1, 1, 1), "instruction nested too deeply",
                                    kind="parse") from None
    return _assemble(prelexed, instructions, strict)


_PIPELINE: tuple[Any, Any, ToNodes] | None = None


def _load() -> tuple[Any, Any, ToNodes]:
    """prelex, run_parser and the (stateless) transformer, imported on the first parse (they load lark)."""
    global _PIPELINE
    # lazy: saves ~50 ms at start-up (lark)
    from grammar.parser import run_parser
    from grammar.prelex import prelex
    from grammar.transform import ToNodes

    _PIPELINE = (prelex, run_parser, ToNodes())
    return _PIPELINE


def _assemble(prelexed: Prelexed, instructions: tuple[nodes.Instruction, ...], strict: bool) -> nodes.Dockerfile:
    """Split instructions into meta ARGs and stages, as BuildKit's instructions.Parse does."""
    meta: list[nodes.Arg] = []
    stages: list[nodes.Stage] = []
    current: list[nodes.Instruction] = []
    base: nodes.From | None = None

    def close() -> None:
        if base is not None:
            last = current[-1].span if current else base.span
            span = nodes.Span(base.span.file, base.span.line, base.span.col, last.end_line, last.end_col)
            stages.append(nodes.Stage(len(stages), base.stage_name, base, tuple(current), span))

    for ins in instructions:
        if isinstance(ins, nodes.From):
            close()
            base, current = ins, []
        elif base is None and isinstance(ins, nodes.Arg):
            meta.append(ins)
        elif base is None:
            if strict:
                source = prelexed.physical[ins.span.line - 1]
                raise DockerfileSyntaxError(
                    ins.span, f"no build stage in current context ({ins.name} before the first FROM)",
                    hint="only ARG may come before the first FROM", source_line=source)
        else:
            current.append(ins)
    close()
    return nodes.Dockerfile(prelexed.filename, prelexed.directives, prelexed.escape, tuple(meta),
                            tuple(stages), instructions)
