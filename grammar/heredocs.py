"""Which heredocs a line opens: BuildKit's parser.heredocsFromLine / ParseHeredoc.

BuildKit runs its shell lexer over the whole instruction line (escape always `\\`, quotes and
escapes kept, unset variables left as written) and matches `[n]<<[-]word` on each word. When the
lexer fails (an open quote, a malformed `${...}`) it gets no words, so the line opens no heredocs.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

# Go's unicode.IsSpace (Python's str.isspace also accepts \x1c-\x1f, Go does not).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
           "\u2028\u2029\u202f\u205f\u3000"
_HEREDOC_WORD = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z")
_SPECIAL_PARAMS = frozenset("@*#?-$!0")


def heredocs_from_line(text: str) -> list[tuple[str, bool, bool, int]]:
    """The heredocs a line opens: (name, expand, chomp, offset of the word) in order.

    BuildKit splits the line into shell words keeping quotes and escapes (its `<<` handling glues
    `<<` to a following word even across blanks), then matches `[n]<<[-]word` on each word. The
    name is the word with quotes removed; a quoted name means no expansion. Escape is always `\\`.
    """
    if not shell_syntax_ok(text):
        return []
    found = []
    for word, offset in raw_shell_words(text):
        m = _HEREDOC_WORD.match(word)
        if not m or not m.group(3):
            continue
        rest = m.group(3)
        words = [w for w, _ in raw_shell_words(rest)]
        if len(words) != 1:
            continue
        name = unquote_word(words[0])
        if not name:
            continue
        raw_quotes = words[0].count("'") + words[0].count('"')
        expand = name.count("'") + name.count('"') == raw_quotes
        found.append((name, expand, m.group(2) == "-", offset))
    return found


def raw_shell_words(text: str) -> list[tuple[str, int]]:
    """Words split on unquoted whitespace, quotes and `\\` escapes kept; [] if a quote is open."""
    words: list[tuple[str, int]] = []
    buf: list[str] = []
    start = -1
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"":
            close = _closing_quote(text, i)
            if close < 0:
                return []
            start = i if start < 0 else start
            buf.append(text[i:close + 1])
            i = close + 1
            continue
        if ch == "<" and text.startswith("<<", i):
            j = i + 2
            while j < n and text[j] in " \t":
                j += 1
            start = i if start < 0 else start
            buf.append(text[i:j])
            i = j
            continue
        if ch == "\\":
            start = i if start < 0 else start
            buf.append(text[i:i + 2])
            i += 2
            continue
        if ch in GO_SPACE:
            if buf:
                words.append(("".join(buf), start))
                buf, start = [], -1
            i += 1
            continue
        start = i if start < 0 else start
        buf.append(ch)
        i += 1
    if buf:
        words.append(("".join(buf), start))
    return words


def _closing_quote(text: str, i: int) -> int:
    quote = text[i]
    j = i + 1
    while j < len(text):
        if text[j] == quote:
            return j
        if quote == '"' and text[j] == "\\":
            j += 1
        j += 1
    return -1


def unquote_word(word: str) -> str | None:
    """Quote removal and `\\` escapes of one shell word (no expansion); None if a quote is open."""
    out: list[str] = []
    i, n = 0, len(word)
    while i < n:
        ch = word[i]
        if ch == "'":
            j = word.find("'", i + 1)
            if j < 0:
                return None
            out.append(word[i + 1:j])
            i = j + 1
        elif ch == '"':
            j = i + 1
            while j < n and word[j] != '"':
                if word[j] == "\\" and j + 1 < n and word[j + 1] in '"$\\':
                    j += 1
                out.append(word[j])
                j += 1
            if j >= n:
                return None
            i = j + 1
        elif ch == "\\":
            if i + 1 < n:
                out.append(word[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class _Bad(Exception):
    """The shell lexer would fail here."""


def shell_syntax_ok(text: str) -> bool:
    """Whether BuildKit's ProcessWords (escape `\\`, unset variables kept) gets through `text`.

    With unset variables kept as written, only syntax can fail: an open quote, `${` at the end or
    before `{`/`}`/`:`, an unknown modifier (also `:#`/`:%`), or a `${...}` without its `}`/`/`.
    """
    try:
        _scan(text, 0, "")
    except _Bad:
        return False
    return True


def _scan(text: str, i: int, stop: str) -> int:
    """lex.go processStopOn: the offset after `stop` (or the end when stop is '')."""
    n = len(text)
    while i < n:
        ch = text[i]
        if stop and ch == stop:
            return i + 1
        if ch == "$":
            i = _dollar(text, i + 1)
        elif ch == "'":
            i = text.find("'", i + 1) + 1
            if i == 0:
                raise _Bad
        elif ch == '"':
            i = _double_quote(text, i + 1)
        else:
            i += 2 if ch == "\\" else 1
    if stop:
        raise _Bad
    return n


def _double_quote(text: str, i: int) -> int:
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return i + 1
        if ch == "$":
            i = _dollar(text, i + 1)
            continue
        i += 1
        if ch == "\\" and i < len(text) and text[i] in '"$\\':
            i += 1
    raise _Bad


def _dollar(text: str, i: int) -> int:
    """After a `$`: the offset after the expansion (lex.go processDollar)."""
    n = len(text)
    if i >= n or text[i] != "{":
        return _name(text, i)
    i += 1
    if i >= n or text[i] in "{}:":
        raise _Bad
    i = _name(text, i)
    if i >= n:
        raise _Bad
    ch, i = text[i], i + 1
    if ch == "}":
        return i
    if ch == ":":
        if i < n:
            ch, i = text[i], i + 1  # consumed whatever it is, as BuildKit does
            if ch in "#%":
                raise _Bad
        return _scan(text, i, "}")
    if ch in "+-?#%":
        return _scan(text, i, "}")
    if ch == "/":
        i += 1 if i < n and text[i] == "/" else 0
        return _scan(text, _scan(text, i, "/"), "}")
    raise _Bad


def _name(text: str, i: int) -> int:
    """lex.go processName: digits, one special parameter, or letters/digits/_."""
    n = len(text)
    if i < n and text[i].isdecimal():
        while i < n and text[i].isdecimal():
            i += 1
        return i
    if i < n and text[i] in _SPECIAL_PARAMS:
        return i + 1
    while i < n and (text[i].isalpha() or text[i].isnumeric() or text[i] == "_"):
        i += 1
    return i


def expand_body(body: str, env: Mapping[str, str]) -> str:
    """A COPY/ADD heredoc body as BuildKit expands it when its delimiter is unquoted (ExpandRaw): variables
    expanded, `\\` escapes applied (escape always `\\`), quotes kept as written (SkipProcessQuotes)."""
    from grammar.shell import ShellLex  # lazy: saves ~2 ms at start-up

    return ShellLex("\\", skip_quotes=True).process_word(body, env)
