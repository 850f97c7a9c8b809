"""The pattern side of BuildKit's `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}`, and Go's %q for messages.

Mirrors lex.go convertShellPatternToRegex, trimPrefix/trimSuffix/reversePattern and the two
replacement paths: a single `/` replaces literally, `//` goes through Go's ReplaceAllString, so
`$0`/`${0}` in the replacement is the match, other `$name` are empty and `$$` is `$`, and an empty
match right after a match is not replaced. Pure functions, stdlib only.
"""
from __future__ import annotations



class ShellPatternError(ValueError):
    """A `${VAR#...}`-style pattern BuildKit refuses (an escape other than `\\*`, `\\?`, `\\\\`)."""


_LIT, _ANY, _STAR = range(3)


class _Glob:
    """A shell pattern as lex.go's convertShellPatternToRegex reads it (`*` any run, `?` any character, `\\`
    escapes `*?\\`; as in Go's regexp, neither crosses a newline), matched by an NFA over its tokens: time
    linear in the value (Python's `re` backtracked: `${v##*a*a*a*a*a*a*a*a*b}` took minutes on 40 characters)."""

    def __init__(self, pattern: str) -> None:
        tokens: list[tuple[int, str]] = []
        i = 1 if pattern.startswith("\ufeff") else 0  # Go's text/scanner skips a leading BOM
        while i < len(pattern):
            tok = pattern[i]
            i += 1
            if tok == "*":
                tokens.append((_STAR, ""))
            elif tok == "?":
                tokens.append((_ANY, ""))
            elif tok == "\\" and pattern.startswith(("}", "/"), i):
                continue  # `\}` and `\/` escape the ${} syntax, not the pattern
            elif tok == "\\":
                tok = pattern[i] if i < len(pattern) else "\ufffd"  # Go prints EOF as U+FFFD
                i += 1
                if tok not in ("*", "?", "\\"):
                    raise ShellPatternError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{tok}'")
                tokens.append((_LIT, tok))
            else:
                tokens.append((_LIT, tok))
        self.tokens = tokens

    def _close(self, states: dict[int, int]) -> dict[int, int]:
        """Add the states reachable by letting `*` match nothing (each keeps the smallest start)."""
        if not states:
            return states
        for k in range(min(states), len(self.tokens)):  # ascending: a run of `*` is followed through
            if k in states and self.tokens[k][0] == _STAR:
                start = states[k]
                if states.get(k + 1, start + 1) > start:
                    states[k + 1] = start
        return states

    def _step(self, states: dict[int, int], ch: str) -> dict[int, int]:
        nxt: dict[int, int] = {}
        for k, start in states.items():
            if k == len(self.tokens):
                continue
            kind, lit = self.tokens[k]
            target = k if kind == _STAR else k + 1
            if (ch == lit) if kind == _LIT else ch != "\n":
                if nxt.get(target, start + 1) > start:
                    nxt[target] = start
        return self._close(nxt)

    def ends(self, text: str, start: int) -> list[int]:
        """Every end e such that text[start:e] matches the whole pattern, ascending."""
        found, states, m = [], self._close({0: start}), len(self.tokens)
        for i in range(start, len(text) + 1):
            if m in states:
                found.append(i)
            if i == len(text) or not states:
                break
            states = self._step(states, text[i])
        return found

    def search(self, text: str, pos: int) -> tuple[int, int] | None:
        """The leftmost match at or after ``pos``, longest from its start (Go's leftmost-first with greedy
        stars, which for these patterns is the longest): (start, end) or None."""
        states: dict[int, int] = {}
        first: int | None = None
        m = len(self.tokens)
        for i in range(pos, len(text) + 1):
            if first is None:
                states.setdefault(0, i)
                states = self._close(states)
            if m in states:
                first = states[m] if first is None else min(first, states[m])
            if first is not None and all(start >= first for start in states.values()):
                break
            if i == len(text):
                break
            states = self._step(states, text[i])
        if first is None:
            return None
        return first, self.ends(text, first)[-1]


def replace(pattern: str, value: str, replacement: str, *, replace_all: bool) -> str:
    """`${VAR/pattern/replacement}` (first match, literal) or `${VAR//pattern/replacement}`."""
    glob = _Glob(pattern)
    if replace_all:
        return _go_replace_all(glob, value, replacement)
    found = glob.search(value, 0)
    if found is None:
        return value
    return value[:found[0]] + replacement + value[found[1]:]


def trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    """`${VAR#pattern}` (shortest) or `${VAR##pattern}` (greedy): drop a matching prefix."""
    ends = _Glob(pattern).ends(value, 0)
    if not ends:
        return value
    return value[ends[-1] if greedy else ends[0]:]


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern but keep each `\\x` pair in order (lex.go reversePattern)."""
    out = list(pattern)
    last = len(pattern) - 1
    i = 0
    while i <= last:
        tok = pattern[i]
        if tok == "\\" and i != last:
            out[last - i - 1] = tok
            out[last - i] = pattern[i + 1]
            i += 2
        else:
            out[last - i] = tok
            i += 1
    return "".join(out)


def trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    """`${VAR%pattern}` / `${VAR%%pattern}`: drop a matching suffix."""
    # the shortest or longest rightmost match: reverse both and trim a prefix
    return trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _go_replace_all(glob: _Glob, value: str, template: str) -> str:
    """Go's Regexp.ReplaceAllString: its empty-match rule and `$` template expansion."""
    out: list[str] = []
    last_end = 0
    pos = 0
    while pos <= len(value):
        found = glob.search(value, pos)
        if found is None:
            break
        start, end = found
        out.append(value[last_end:start])
        if end > last_end or start == 0:
            out.append(_go_expand(template, value[start:end]))
        last_end = end
        pos = pos + 1 if pos + 1 > end else end
    out.append(value[last_end:])
    return "".join(out)


def _go_expand(template: str, match: str) -> str:
    """Regexp.Expand with one group (0, the match): `$0`/`${0}` is the match, `$$` a `$`."""
    out: list[str] = []
    while True:
        before, dollar, template = template.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if template.startswith("$"):
            out.append("$")
            template = template[1:]
            continue
        parsed = _go_template_name(template)
        if parsed is None:
            out.append("$")
            continue
        name, template = parsed
        if name == "0":
            out.append(match)


def _go_template_name(text: str) -> tuple[str, str] | None:
    """regexp's extract: `name` or `{name}` (letters, digits, `_`); None if malformed."""
    brace = text.startswith("{")
    i = 1 if brace else 0
    start = i
    while i < len(text) and (text[i].isalpha() or text[i].isdecimal() or text[i] == "_"):
        i += 1
    if i == start:
        return None
    name = text[start:i]
    if brace:
        if i >= len(text) or text[i] != "}":
            return None
        i += 1
    return name, text[i:]


from grammar.dump import go_quote  # noqa: E402,F401  (one Go strconv.Quote for the package)
