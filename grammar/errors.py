"""DockerfileSyntaxError: the one exception the grammar package raises, and `suggest` for hints.

The error carries the `Span` it is about and the text of the offending source line, and renders
itself once (file:line:col, the line, a caret run under the span, an optional hint), in the spirit
of BuildKit's `parser.LocationError` + `util/suggest`.
"""
from __future__ import annotations

from grammar import nodes

# BuildKit's util/suggest accepts a candidate whose Levenshtein distance is below 3.
_MAX_DISTANCE = 3
MAX_MESSAGE = 500  # characters of an error message
MAX_LINE = 160  # characters of a Dockerfile line shown under a message
ELLIPSIS = "…"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when cut."""
    return text if len(text) <= limit else text[:max(limit - 1, 0)] + ELLIPSIS


def printable(text: str) -> str:
    """``text`` for a terminal: control characters (escape sequences) shown as "?", one for one, so that
    printing an error cannot drive the operator's terminal."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def _window(line: str, start: int, width: int) -> tuple[str, int, int]:
    """At most MAX_LINE characters of ``line`` around the span (1-based ``start``, ``width``), cut with "…";
    returns (text, start, width) for the text shown."""
    if len(line) <= MAX_LINE:
        return line, start, width
    first = max(0, min(start - 1 - MAX_LINE // 4, len(line) - MAX_LINE))
    shown = line[first:first + MAX_LINE]
    prefix = ELLIPSIS if first else ""
    suffix = ELLIPSIS if first + MAX_LINE < len(line) else ""
    start = start - first + len(prefix)
    width = max(min(width, len(prefix) + len(shown) - start + 1), 1)
    return prefix + shown + suffix, start, width


class DockerfileSyntaxError(Exception):
    """A Dockerfile that BuildKit would reject, with where and (maybe) how to fix it.

    kind: "parse" for errors of BuildKit's low-level parser (parser.Parse), "instruction" for
    errors BuildKit raises later in instructions.Parse (arity, flags, unknown instruction, ...).
    """

    def __init__(self, span: nodes.Span, message: str, *, hint: str | None = None,
                 source_line: str = "", kind: str = "instruction") -> None:
        super().__init__(f"{span}: {message}")
        self.span = span
        self.message = message
        self.hint = hint
        self.source_line = source_line
        self.kind = kind

    def render(self) -> str:
        """A one-screen message: location, message, the source line with carets, the hint."""
        out = [f"{self.span}: {printable(shorten(self.message, MAX_MESSAGE))}"]
        if self.source_line:
            num = str(self.span.line)
            pad = " " * len(num)
            text = self.source_line.expandtabs(1)
            start = max(self.span.col, 1)
            if self.span.end_line == self.span.line:
                width = max(self.span.end_col - start + 1, 1)
            else:
                width = max(len(text) - start + 1, 1)
            text, start, width = _window(text, start, width)
            text = printable(text)  # one for one: the caret stays under the span
            out.append(f"   {num} | {text}")
            out.append(f"   {pad} | {' ' * (start - 1)}{'^' * width}")
        if self.hint:
            out.append(f"hint: {printable(shorten(self.hint, MAX_MESSAGE))}")
        return "\n".join(out)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; each costs 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def suggest(value: str, choices: list[str] | tuple[str, ...], *, case_sensitive: bool = False) -> str | None:
    """The closest choice (distance < 3) as BuildKit's suggest.Search picks it, or None.

    An exact match returns None (the error was about something else). Case-insensitive matching
    returns the choice in the case style of `value` (all lower / all upper), as BuildKit does.
    """
    val = value if case_sensitive else value.lower()
    best, best_dist = None, _MAX_DISTANCE
    for choice in sorted(choices):
        opt = choice if case_sensitive else choice.lower()
        if val == opt:
            return None
        dist = levenshtein(val, opt)
        if dist < best_dist:
            best, best_dist = opt, dist
    if best is None or case_sensitive:
        return best
    if value == value.lower():
        return best.lower()
    if value == value.upper():
        return best.upper()
    return best
