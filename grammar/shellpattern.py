"""The pattern side of BuildKit's `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}`, and Go's %q for messages.

Mirrors lex.go convertShellPatternToRegex, trimPrefix/trimSuffix/reversePattern and the two
replacement paths: a single `/` replaces literally, `//` goes through Go's ReplaceAllString, so
`$0`/`${0}` in the replacement is the match, other `$name` are empty and `$$` is `$`, and an empty
match right after a match is not replaced. Pure functions, stdlib only.
"""
from __future__ import annotations

import re


class ShellPatternError(ValueError):
    """A `${VAR#...}`-style pattern BuildKit refuses (an escape other than `\\*`, `\\?`, `\\\\`)."""


def replace(pattern: str, value: str, replacement: str, *, replace_all: bool) -> str:
    """`${VAR/pattern/replacement}` (first match, literal) or `${VAR//pattern/replacement}`."""
    regex = _pattern_regex(pattern, greedy=True, anchored=False)
    if replace_all:
        return _go_replace_all(regex, value, replacement)
    found = regex.search(value)
    if found is None:
        return value
    return value[:found.start()] + replacement + value[found.end():]


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """lex.go convertShellPatternToRegex: `*` any run, `?` any character, `\\` escapes `*?\\`."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 1 if pattern.startswith("\ufeff") else 0  # Go's text/scanner skips a leading BOM
    while i < len(pattern):
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\" and pattern.startswith(("}", "/"), i):
            continue  # `\}` and `\/` escape the ${} syntax, not the pattern
        elif tok == "\\":
            tok = pattern[i] if i < len(pattern) else "\ufffd"  # Go prints EOF as U+FFFD
            i += 1
            if tok not in ("*", "?", "\\"):
                raise ShellPatternError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{tok}'")
            out.append(re.escape(tok))
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out))


def trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    """`${VAR#pattern}` (shortest) or `${VAR##pattern}` (greedy): drop a matching prefix."""
    found = _pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[found.end():] if found else value


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
    # a regex cannot find the shortest rightmost match, so reverse both and trim a prefix
    return trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _go_replace_all(regex: re.Pattern[str], value: str, template: str) -> str:
    """Go's Regexp.ReplaceAllString: its empty-match rule and `$` template expansion."""
    out: list[str] = []
    last_end = 0
    pos = 0
    while pos <= len(value):
        found = regex.search(value, pos)
        if found is None:
            break
        start, end = found.span()
        out.append(value[last_end:start])
        if end > last_end or start == 0:
            out.append(_go_expand(template, found.group(0)))
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
