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
from pathlib import Path
from typing import Any, Iterator

from lark import Lark, Token
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import Lexer

from grammar import nodes
from grammar.errors import DockerfileSyntaxError
from grammar.flags import split_flags
from grammar.heredocs import GO_SPACE
from grammar.larkerrors import unexpected_token
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


class Context:
    """What every keyword token carries to the transformer (a plain class: one is made per line, and a frozen
    dataclass's __init__ costs twice as much)."""

    __slots__ = ("prelexed", "line", "strict")

    def __init__(self, prelexed: Prelexed, line: LogicalLine, strict: bool) -> None:
        self.prelexed, self.line, self.strict = prelexed, line, strict


_new_str = str.__new__


class Tok(Token):
    """A lark Token with extra data (decoded JSON, heredoc, context of a keyword); slotted, as lark's Token is,
    so making one allocates no __dict__ (the lexer makes ~40 per file)."""

    __slots__ = ("data",)
    data: Any
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
            out: list[Tok] = []
            try:
                _line_tokens(out, line, line.text, 0, prelexed.escape, Context(prelexed, line, strict))
            except DockerfileSyntaxError:
                yield from out  # the tokens before the error first, as lark would have seen them
                raise
            yield from out


def tokens(prelexed: Prelexed, strict: bool) -> list[Tok]:
    """Every token of the file at once (what `DockerfileLexer.lex` yields)."""
    out: list[Tok] = []
    for line in prelexed.lines:
        _line_tokens(out, line, line.text, 0, prelexed.escape, Context(prelexed, line, strict))
    return out


def _tok(line: LogicalLine, kind: str, value: str, start: int, end: int, data: Any = None) -> Tok:
    # Built by hand (not Token.__new__): this is the lexer's hot path.
    tok = _new_str(Tok, value)
    tok.type = kind
    tok.value = value
    tok.start_pos = start
    tok.end_pos = end
    tok.data = data
    pieces = line.pieces
    if len(pieces) == 1:
        _, ln, col = pieces[0]
        tok.line = tok.end_line = ln
        tok.column = col + start
        tok.end_column = col + (end - 1 if end > start else start)
    else:
        tok.line, tok.column = line.locate(start)
        tok.end_line, tok.end_column = line.locate(max(end - 1, start))
    return tok


def _line_tokens(out: list[Tok], line: LogicalLine, text: str, base: int, escape: str, ctx: Context) -> None:
    keyword, rest, rest_off = split_command(text)
    lower = keyword.lower()
    out.append(_tok(line, _TYPES.get(lower, "K_UNKNOWN"), keyword, base, base + len(keyword), ctx))
    rest_off += base
    if rest.lstrip(_ASCII_SPACE).startswith("--"):
        words, start = split_flags(rest, escape)
        for word in words:
            out.append(_tok(line, "FLAG", word.text, rest_off + word.start, rest_off + word.end))
        args = rest[start:]
    else:  # no flags (what split_flags would find without walking the words)
        start, args = 0, rest
    stripped = args.lstrip(GO_SPACE)
    off = rest_off + start + len(args) - len(stripped)
    args = stripped.rstrip(GO_SPACE)
    family = _FAMILY.get(lower)
    if family == "nested":
        if args:
            _line_tokens(out, line, args, off, escape, ctx)
        # ONBUILD's trigger is optional: _END keeps `ONBUILD` + the next line from merging.
        out.append(_tok(line, "_END", "", len(line.text), len(line.text)))
        return
    if args:
        _arg_tokens(out, line, family, args, off, escape)
    if line.heredocs and lower in ("run", "copy", "add"):
        end = len(line.text)
        for heredoc in line.heredocs:
            out.append(_tok(line, "HEREDOC", heredoc.name, end, end, heredoc))


def _arg_tokens(out: list[Tok], line: LogicalLine, family: str | None, args: str, off: int, escape: str) -> None:
    if family == "words":
        _split_tokens(out, line, args, off, "WORD")
    elif family == "paths":
        if args[0] != "[" or not _json(out, line, args, off):
            _split_tokens(out, line, args, off, "WORD")
    elif family == "command":
        if args[0] != "[" or not _json(out, line, args, off):
            out.append(_tok(line, "TEXT", args, off, off + len(args)))
    elif family == "text":
        out.append(_tok(line, "TEXT", args, off, off + len(args)))
    elif family == "pairs":
        _pair_tokens(out, line, args, off, escape)
    elif family == "argwords":
        for word, s, e in parse_words(args, escape):
            out.append(_tok(line, "WORD", word, off + s, off + e))
    elif family == "health":
        _health_tokens(out, line, args, off)


def _split_tokens(out: list[Tok], line: LogicalLine, args: str, off: int, kind: str) -> None:
    pos = 0
    for m in SEPARATOR.finditer(args):
        out.append(_tok(line, kind, args[pos:m.start()], off + pos, off + m.start()))
        pos = m.end()
    out.append(_tok(line, kind, args[pos:], off + pos, off + len(args)))


def _json(out: list[Tok], line: LogicalLine, args: str, off: int) -> bool:
    """A JSON token when args is a JSON array of strings (False: the caller's other form)."""
    try:
        argv = decode_json_array(args) if args[0] == "[" else None
    except NotStringArray as e:
        raise _error(line, off, off + len(args), str(e), kind="parse",
                     hint='write every element as a "string", or drop the brackets for shell form') from None
    if argv is None:
        return False
    out.append(_tok(line, "JSON", args, off, off + len(args), argv))
    return True


def _pair_tokens(out: list[Tok], line: LogicalLine, args: str, off: int, escape: str) -> None:
    words = parse_words(args, escape)
    if "=" not in words[0][0]:
        m = SEPARATOR.search(args)
        end = m.start() if m else len(args)
        out.append(_tok(line, "LEGACY_KEY", args[:end], off, off + end))
        if m:
            out.append(_tok(line, "LEGACY_VALUE", args[m.end():], off + m.end(), off + len(args)))
        return
    for word, s, e in words:
        out.append(_tok(line, "KV" if "=" in word else "BAREWORD", word, off + s, off + e))


def _health_tokens(out: list[Tok], line: LogicalLine, args: str, off: int) -> None:
    sep = 0
    while sep < len(args) and args[sep] not in _ASCII_SPACE:
        sep += 1
    nxt = sep
    while nxt < len(args) and args[nxt] in _ASCII_SPACE:
        nxt += 1
    out.append(_tok(line, "HC_WORD", args[:sep], off, off + sep))
    rest = args[nxt:]
    if rest:
        start = off + nxt
        if not _json(out, line, rest, start):
            out.append(_tok(line, "TEXT", rest, start, start + len(rest)))


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
    from grammar.memo import cache_root  # lazy: saves <1 ms at start-up (its modules are loaded by then)

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


# The grammar (dockerfile.lark) is a regular language over token types: one letter per type, one pattern per
# rule, spelled exactly as the .lark rules. A token stream that the whole pattern matches is one the LALR parser
# accepts with the same tree, so its instructions go straight to the transformer's callbacks, in the order the
# parser would reduce them (a nested ONBUILD trigger first). Anything else, errors included, goes through lark.
_CODES = {"FLAG": "f", "WORD": "w", "JSON": "j", "TEXT": "t", "KV": "k", "BAREWORD": "b", "LEGACY_KEY": "l",
          "LEGACY_VALUE": "v", "HC_WORD": "h", "HEREDOC": "d", "_END": "e", "K_FROM": "F", "K_RUN": "R",
          "K_CMD": "C", "K_ENTRYPOINT": "E", "K_SHELL": "S", "K_COPY": "P", "K_ADD": "A", "K_VOLUME": "V",
          "K_ENV": "N", "K_LABEL": "L", "K_ARG": "G", "K_EXPOSE": "X", "K_USER": "U", "K_WORKDIR": "W",
          "K_STOPSIGNAL": "Z", "K_MAINTAINER": "M", "K_HEALTHCHECK": "H", "K_ONBUILD": "O", "K_UNKNOWN": "Q"}
_RULES = {"F": "f*w*", "R": "f*[jt]?d*", "C": "f*[jt]?", "E": "f*[jt]?", "S": "f*[jt]?", "P": "f*(?:j|w+)?d*",
          "A": "f*(?:j|w+)?d*", "V": "f*(?:j|w+)?", "N": "f*(?:k+|lv)?", "L": "f*(?:k+|lv)?", "G": "f*w*",
          "X": "f*w*", "U": "f*t?", "W": "f*t?", "Z": "f*t?", "M": "f*t?", "H": "f*(?:h[jt]?)?", "Q": "f*"}
_PLAIN = "|".join(k + v for k, v in _RULES.items())
_NAMES = {code: kind[2:].lower() for kind, code in _CODES.items() if kind.startswith("K_")}


def _program() -> re.Pattern[str]:
    """The whole file's pattern; ONBUILD triggers nest up to a fixed depth (deeper files go through lark)."""
    instruction = f"(?:{_PLAIN})"
    for _ in range(4):
        instruction = f"(?:{_PLAIN}|Of*{instruction}?e)"
    return re.compile(f"{instruction}+")


_PATTERN = _program()


def _direct(prelexed: Prelexed, strict: bool, transformer: Any) -> list[Any] | None:
    """The instructions, when the token stream is one the grammar accepts; None to let lark parse it."""
    try:
        toks = tokens(prelexed, strict)
    except DockerfileSyntaxError:
        return None  # lark interleaves lexing and callbacks: it reports whichever error comes first
    codes = "".join([_CODES.get(t.type, "?") for t in toks])
    if _PATTERN.fullmatch(codes) is None:
        return None
    out: list[Any] = []
    i, n = 0, len(toks)
    while i < n:
        node, i = _one(toks, codes, i, transformer)
        out.append(node)
    instructions: list[Any] = transformer.start(out)
    return instructions


def _one(toks: list[Any], codes: str, i: int, transformer: Any) -> tuple[Any, int]:
    code = codes[i]
    j = i + 1
    if code == "O":
        while codes[j] == "f":
            j += 1
        children = toks[i:j]
        if codes[j] != "e":
            node, j = _one(toks, codes, j, transformer)
            children.append(node)
        return getattr(transformer, "onbuild")(children), j + 1
    while j < len(codes) and not codes[j].isupper() and codes[j] != "e":
        j += 1
    return getattr(transformer, _NAMES[code])(toks[i:j]), j


def run_parser(prelexed: Prelexed, strict: bool, transformer: Any) -> Any:
    """Parse the logical lines; lark errors become DockerfileSyntaxError."""
    direct = _direct(prelexed, strict, transformer)
    return direct if direct is not None else run_lark(prelexed, strict, transformer)


def run_lark(prelexed: Prelexed, strict: bool, transformer: Any) -> Any:
    """The LALR parser itself (every input the direct path does not take, and the tests' reference)."""
    try:
        return get_parser(transformer).parse((prelexed, strict))
    except VisitError as e:
        if isinstance(e.orig_exc, DockerfileSyntaxError):
            raise e.orig_exc from None
        raise
    except UnexpectedToken as e:
        raise unexpected_token(prelexed, e) from None
    except UnexpectedInput as e:  # pragma: no cover - the lexer is ours, so only tokens can be wrong
        raise DockerfileSyntaxError(nodes.Span(prelexed.filename, 1, 1, 1, 1), str(e), kind="parse") from None
