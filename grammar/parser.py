"""The lark LALR parser for dockerfile.lark and the lexer that feeds it typed tokens.

The lexer turns each `prelex.LogicalLine` into tokens the way BuildKit's line parsers
(parser/line_parsers.go) see the line: keyword, flags (`flags.split_flags`), then arguments by
keyword: whitespace-split WORDs, one verbatim TEXT, a JSON array, quote-aware KV words, ...
Every token carries its 1-based line/column from the logical line's source map.

The Lark object is built once per process; its analysed tables are cached on disk (lark's
`cache=`) under the user cache directory, so a run does not pay grammar construction.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lark import Lark, Token
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import Lexer

from grammar import nodes
from grammar.errors import DockerfileSyntaxError
from grammar.flags import split_flags
from grammar.heredocs import GO_SPACE
from grammar.prelex import (SEPARATOR, LogicalLine, NotStringArray, Prelexed, decode_json_array,
                            split_command)

GRAMMAR = Path(__file__).with_name("dockerfile.lark")

KEYWORDS = ("add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
            "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir")
_TYPES = {k: "K_" + k.upper() for k in KEYWORDS}
_FAMILY = {
    "from": "words", "expose": "words",
    "add": "paths", "copy": "paths", "volume": "paths",
    "run": "command", "cmd": "command", "entrypoint": "command", "shell": "command",
    "env": "pairs", "label": "pairs", "arg": "argwords",
    "maintainer": "text", "user": "text", "workdir": "text", "stopsignal": "text",
    "healthcheck": "health", "onbuild": "nested",
}
_ASCII_SPACE = " \t\n\v\f\r"


@dataclass(frozen=True, slots=True)
class Context:
    """What every keyword token carries to the transformer."""

    prelexed: Prelexed
    line: LogicalLine
    strict: bool


class Tok(Token):
    """A lark Token with extra data (decoded JSON, heredoc, context of a keyword)."""

    data: Any = None
    line: int  # always set on the tokens DockerfileLexer makes (lark types them Optional)
    column: int
    end_line: int
    end_column: int


class DockerfileLexer(Lexer):
    """Feeds lark the tokens of a `Prelexed` file (see the module docstring)."""

    def __init__(self, lexer_conf: Any) -> None:
        pass

    def lex(self, data: tuple[Prelexed, bool]) -> Iterator[Token]:  # type: ignore[override]
        prelexed, strict = data
        for line in prelexed.lines:
            ctx = Context(prelexed, line, strict)
            yield from _line_tokens(line, line.text, 0, prelexed.escape, ctx)


def _tok(line: LogicalLine, kind: str, value: str, start: int, end: int, data: Any = None) -> Tok:
    # Built by hand (not Token.__new__): this is the lexer's hot path.
    tok = str.__new__(Tok, value)
    tok.type, tok.value, tok.start_pos, tok.end_pos, tok.data = kind, value, start, end, data
    pieces = line.pieces
    if len(pieces) == 1:
        _, ln, col = pieces[0]
        tok.line = tok.end_line = ln
        tok.column, tok.end_column = col + start, col + max(end - 1, start)
    else:
        tok.line, tok.column = line.locate(start)
        tok.end_line, tok.end_column = line.locate(max(end - 1, start))
    return tok


def _line_tokens(line: LogicalLine, text: str, base: int, escape: str, ctx: Context) -> Iterator[Tok]:
    keyword, rest, rest_off = split_command(text)
    lower = keyword.lower()
    yield _tok(line, _TYPES.get(lower, "K_UNKNOWN"), keyword, base, base + len(keyword), ctx)
    words, start = split_flags(rest, escape)
    rest_off += base
    for word in words:
        yield _tok(line, "FLAG", word.text, rest_off + word.start, rest_off + word.end)
    args = rest[start:]
    stripped = args.lstrip(GO_SPACE)
    off = rest_off + start + len(args) - len(stripped)
    args = stripped.rstrip(GO_SPACE)
    family = _FAMILY.get(lower)
    if family == "nested":
        if args:
            yield from _line_tokens(line, args, off, escape, ctx)
        # ONBUILD's trigger is optional: _END keeps `ONBUILD` + the next line from merging.
        yield _tok(line, "_END", "", len(line.text), len(line.text))
        return
    if args:
        yield from _arg_tokens(line, family, args, off, escape)
    if line.heredocs and lower in ("run", "copy", "add"):
        end = len(line.text)
        for heredoc in line.heredocs:
            yield _tok(line, "HEREDOC", heredoc.name, end, end, heredoc)


def _arg_tokens(line: LogicalLine, family: str | None, args: str, off: int, escape: str) -> Iterator[Tok]:
    if family == "words":
        yield from _split_tokens(line, args, off, "WORD")
    elif family == "paths":
        yield from _json_or(line, args, off, lambda: _split_tokens(line, args, off, "WORD"))
    elif family == "command":
        yield from _json_or(line, args, off, lambda: iter([_tok(line, "TEXT", args, off, off + len(args))]))
    elif family == "text":
        yield _tok(line, "TEXT", args, off, off + len(args))
    elif family == "pairs":
        yield from _pair_tokens(line, args, off, escape)
    elif family == "argwords":
        for word, s, e in parse_words(args, escape):
            yield _tok(line, "WORD", word, off + s, off + e)
    elif family == "health":
        yield from _health_tokens(line, args, off)


def _split_tokens(line: LogicalLine, args: str, off: int, kind: str) -> Iterator[Tok]:
    pos = 0
    for m in SEPARATOR.finditer(args):
        yield _tok(line, kind, args[pos:m.start()], off + pos, off + m.start())
        pos = m.end()
    yield _tok(line, kind, args[pos:], off + pos, off + len(args))


def _json_or(line: LogicalLine, args: str, off: int, otherwise: Any) -> Iterator[Tok]:
    try:
        argv = decode_json_array(args) if args[0] == "[" else None
    except NotStringArray as e:
        raise _error(line, off, off + len(args), str(e), kind="parse",
                     hint='write every element as a "string", or drop the brackets for shell form') from None
    if argv is None:
        yield from otherwise()
    else:
        yield _tok(line, "JSON", args, off, off + len(args), argv)


def _pair_tokens(line: LogicalLine, args: str, off: int, escape: str) -> Iterator[Tok]:
    words = parse_words(args, escape)
    if "=" not in words[0][0]:
        m = SEPARATOR.search(args)
        end = m.start() if m else len(args)
        yield _tok(line, "LEGACY_KEY", args[:end], off, off + end)
        if m:
            yield _tok(line, "LEGACY_VALUE", args[m.end():], off + m.end(), off + len(args))
        return
    for word, s, e in words:
        yield _tok(line, "KV" if "=" in word else "BAREWORD", word, off + s, off + e)


def _health_tokens(line: LogicalLine, args: str, off: int) -> Iterator[Tok]:
    sep = 0
    while sep < len(args) and args[sep] not in _ASCII_SPACE:
        sep += 1
    nxt = sep
    while nxt < len(args) and args[nxt] in _ASCII_SPACE:
        nxt += 1
    yield _tok(line, "HC_WORD", args[:sep], off, off + sep)
    rest = args[nxt:]
    if rest:
        start = off + nxt
        yield from _json_or(line, rest, start, lambda: iter([_tok(line, "TEXT", rest, start, start + len(rest))]))


def _word_regex(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    sp = "".join(re.escape(c) for c in GO_SPACE)
    return re.compile(rf"""(?:[^{sp}"'{e}]|{e}[\s\S]|{e}\Z|"(?:[^"{e}]|{e}[\s\S]|{e}\Z)*(?:"|\Z)|'[^']*(?:'|\Z))+""")


_WORD_RE = {"\\": _word_regex("\\"), "`": _word_regex("`")}


def parse_words(text: str, escape: str) -> list[tuple[str, int, int]]:
    """BuildKit's parseWords: words split on unquoted whitespace, quotes and escapes kept.

    Returns (word, start, end) offsets; an escape character at the very end is dropped.
    """
    out = []
    for m in _WORD_RE[escape].finditer(text):
        word = m.group()
        if m.end() == len(text) and word.endswith(escape) and _ends_with_lone_escape(word, escape):
            word = word[:-1]
        out.append((word, m.start(), m.end()))
    return out


def _ends_with_lone_escape(word: str, escape: str) -> bool:
    i, quote, lone = 0, "", False
    while i < len(word):
        ch = word[i]
        lone = False
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote == '"':
                if i + 1 == len(word):
                    lone = True
                i += 1
        elif ch in "'\"":
            quote = ch
        elif ch == escape:
            if i + 1 == len(word):
                lone = True
            i += 1
        i += 1
    return lone


def _error(line: LogicalLine, start: int, end: int, message: str, *, kind: str = "instruction",
           hint: str | None = None, ctx: Context | None = None) -> DockerfileSyntaxError:
    ln, col = line.locate(start)
    eln, ecol = line.locate(max(end - 1, start))
    return DockerfileSyntaxError(nodes.Span(ctx.prelexed.filename if ctx else "Dockerfile", ln, col, eln, ecol),
                                 message, hint=hint, kind=kind)


_parser: Lark | None = None


def cache_path() -> str:
    """Where lark's analysed grammar is cached (per user, per grammar and lark version)."""
    from grammar.memo import cache_root

    return os.path.join(cache_root(), "grammar-lalr.cache")


def get_parser(transformer: Any) -> Lark:
    """The process-wide Lark LALR parser (built or loaded from the cache on first use)."""
    global _parser
    if _parser is None:
        kwargs = dict(parser="lalr", lexer=DockerfileLexer, transformer=transformer, maybe_placeholders=False)
        path = cache_path()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _parser = Lark(GRAMMAR.read_text(), cache=path, **kwargs)
        except OSError:
            _parser = Lark(GRAMMAR.read_text(), **kwargs)
    return _parser


def run_parser(prelexed: Prelexed, strict: bool, transformer: Any) -> Any:
    """Parse the logical lines; lark errors become DockerfileSyntaxError."""
    try:
        return get_parser(transformer).parse((prelexed, strict))
    except VisitError as e:
        if isinstance(e.orig_exc, DockerfileSyntaxError):
            raise e.orig_exc from None
        raise
    except UnexpectedToken as e:
        raise _unexpected(prelexed, e) from None
    except UnexpectedInput as e:  # pragma: no cover - the lexer is ours, so only tokens can be wrong
        raise DockerfileSyntaxError(nodes.Span(prelexed.filename, 1, 1, 1, 1), str(e), kind="parse") from None


def _unexpected(prelexed: Prelexed, e: UnexpectedToken) -> DockerfileSyntaxError:
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
    from grammar.dump import go_quote
    return go_quote(text)
