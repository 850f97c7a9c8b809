"""lark's UnexpectedToken as the one clear DockerfileSyntaxError a user sees (what, where, how to fix).

With DockerfileLexer's tokens the grammar rejects only ENV/LABEL pair forms, as BuildKit's parseNameVal does.
"""
from __future__ import annotations

from lark import Token
from lark.exceptions import UnexpectedToken

from grammar import nodes
from grammar.errors import DockerfileSyntaxError
from grammar.prelex import Prelexed


def unexpected_token(prelexed: Prelexed, e: UnexpectedToken) -> DockerfileSyntaxError:
    """The only token sequences the grammar rejects are ENV/LABEL pair forms (BuildKit's parseNameVal)."""
    tok = e.token
    if "LEGACY_VALUE" in e.expected:
        key = _last_token(e)
        keyword = _keyword_of(e)
        tok = key if key is not None else tok
        message = f"{keyword} must have two arguments"
        hint = f"give a value: {keyword} {tok} <value>, or {keyword} {tok}=<value>"
    elif tok.type == "BAREWORD":
        message = f"Syntax error - can't find = in {_go_quote(str(tok))}. Must be of the form: name=value"
        hint = "use name=value for every pair (or the legacy form `ENV name value` for a single pair)"
    else:  # pragma: no cover - not reachable with DockerfileLexer's tokens
        message, hint = f"unexpected {tok.type.lower()} {str(tok)!r}", None
    line_no = getattr(tok, "line", None) or 1
    source = prelexed.physical[line_no - 1] if line_no <= len(prelexed.physical) else ""
    span = nodes.Span(prelexed.filename, line_no, getattr(tok, "column", None) or 1,
                      getattr(tok, "end_line", None) or line_no,
                      getattr(tok, "end_column", None) or getattr(tok, "column", None) or 1)
    return DockerfileSyntaxError(span, message, hint=hint, source_line=source, kind="parse")


def _last_token(e: UnexpectedToken) -> Token | None:
    state = e.interactive_parser.parser_state if e.interactive_parser else None
    stack = state.value_stack if state else []
    return stack[-1] if stack and isinstance(stack[-1], Token) else None


def _keyword_of(e: UnexpectedToken) -> str:
    state = e.interactive_parser.parser_state if e.interactive_parser else None
    for value in reversed(state.value_stack if state else []):
        if isinstance(value, Token) and value.type.startswith("K_"):
            return value.type[2:]
    return "ENV"


def _go_quote(text: str) -> str:
    from grammar.dump import go_quote  # lazy: saves <1 ms at start-up (its modules are loaded by then)
    return go_quote(text)
