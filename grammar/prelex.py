"""Pre-lexing: what an LALR grammar cannot do, done the way BuildKit's parser/parser.go does it.

Input text → `Prelexed`: the parser directives, the escape character, and one `LogicalLine` per
instruction. Handled here: the BOM, CRLF (a line's trailing CR/LF characters are dropped), the
directives at the top (`# syntax=`, `# escape=`, `# check=`), comment lines, continuation lines
with the escape character (also inside a continuation: comment and blank lines are skipped),
and heredoc bodies, which are cut out of the line stream and attached to their instruction.

Every logical line keeps a source map, so an offset into its text maps back to the physical
line and column (1-based) it came from.
"""
from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass

from grammar import nodes
from grammar.errors import DockerfileSyntaxError
from grammar.flags import split_flags
from grammar.heredocs import GO_SPACE, heredocs_from_line

SEPARATOR = re.compile(r"[\t\v\f\r ]+")  # BuildKit's reWhitespace
_DIRECTIVE = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_INSTRUCTIONS = ("run", "copy", "add")
MAX_LINE_BYTES = 64 * 1024  # bufio.Scanner's default token limit, line terminator included


@nodes.fast_init
@dataclass(frozen=True, slots=True)
class LogicalLine:
    """One instruction: its text (continuations joined, trimmed) and where every piece came from.

    pieces: (offset in text, physical line, physical column of that offset), ascending offsets.
    end_line: the last physical line consumed (continuations, skipped lines and heredocs included).
    """

    text: str
    start_line: int
    end_line: int
    end_col: int
    pieces: tuple[tuple[int, int, int], ...]
    heredocs: tuple[nodes.Heredoc, ...] = ()

    def locate(self, offset: int) -> tuple[int, int]:
        """The (line, column) of `offset` in `text` (offsets past the end map after the last char)."""
        i = bisect.bisect_right(self.pieces, (offset, 1 << 62, 0)) - 1
        start, line, col = self.pieces[max(i, 0)]
        return line, col + offset - start


@nodes.fast_init
@dataclass(frozen=True, slots=True)
class Prelexed:
    filename: str
    directives: tuple[tuple[str, str], ...]
    escape: str
    lines: tuple[LogicalLine, ...]
    physical: tuple[str, ...]  # the physical lines without terminators, for error messages


def go_trim(text: str) -> str:
    return text.strip(GO_SPACE)


def split_command(text: str) -> tuple[str, str, int]:
    """(keyword, rest, offset of rest): BuildKit's split at the first run of reWhitespace."""
    m = SEPARATOR.search(text)
    if not m:
        return text, "", len(text)
    return text[:m.start()], text[m.end():], m.end()


def decode_json_array(rest: str) -> tuple[str, ...] | None:
    """BuildKit's parseJSON: the strings of a JSON array, or None when `rest` is not JSON.

    Raises NotStringArray for valid JSON arrays holding anything but strings (an error upstream).
    """
    rest = rest.lstrip(GO_SPACE)
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest, parse_constant=_reject, parse_float=_finite, parse_int=_finite)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise NotStringArray("when using JSON array syntax, arrays must be comprised of strings only")
    # Go decodes a lone UTF-16 surrogate escape to U+FFFD; Python would keep the surrogate.
    return tuple(_SURROGATE.sub("\ufffd", v) for v in value)


class NotStringArray(ValueError):
    pass


_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject(name: str) -> None:
    raise ValueError(name)  # Go's JSON has no NaN/Infinity


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(text)  # Go fails to unmarshal numbers beyond float64
    return value


def prelex(text: str, filename: str = "Dockerfile") -> Prelexed:
    """Directives, escape character and logical lines of a Dockerfile (see module docstring)."""
    return _Scanner(text, filename).run()


class _Scanner:
    def __init__(self, text: str, filename: str) -> None:
        if text.startswith("\ufeff"):
            text = text[1:]
        raw = text.split("\n")
        if raw and raw[-1] == "":
            raw.pop()
        self.filename = filename
        self.raw = raw  # lines without "\n" (a CR before it is still there)
        self.lines = [line.rstrip("\r") for line in raw] if "\r" in text else raw
        self.escape = "\\"
        self.directives: list[tuple[str, str]] = []
        self.directives_done = False
        self.check_lengths = bool(raw) and max(map(len, raw)) * 4 >= MAX_LINE_BYTES

    def error(self, line: int, col: int, message: str, end_col: int | None = None,
              hint: str | None = None) -> DockerfileSyntaxError:
        source = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        end = end_col if end_col is not None else max(len(source), col)
        return DockerfileSyntaxError(nodes.Span(self.filename, line, col, line, end), message,
                                     hint=hint, source_line=source, kind="parse")

    def run(self) -> Prelexed:
        out: list[LogicalLine] = []
        lines = self.lines
        i, n = 0, len(lines)
        check = self.check_lengths
        trim = self._trim_continuation
        directives = not self.directives_done
        while i < n:
            if check:
                self._check_length(i)
            line = lines[i]
            stripped = line.lstrip(GO_SPACE)
            if directives:
                self._directive(stripped, i + 1)
                directives = not self.directives_done
            i += 1
            if not stripped or stripped[0] == "#":
                continue  # blank and comment lines (a comment ending in the escape does not continue)
            last = stripped[-1]
            if last == " " or last == "\t" or last == self.escape:
                content, more = trim(stripped)
                if not more and not content:
                    continue
            else:  # the common line: nothing to trim (as _trim_continuation would find)
                content, more = stripped, False
            start = i
            if not more:  # one physical line (what _logical makes of it, without its general case)
                logical = LogicalLine(content.rstrip(GO_SPACE), start, start, max(len(line), 1),
                                      ((0, start, len(line) - len(stripped) + 1),))
                if "<<" in logical.text and can_contain_heredoc(logical.text, self.escape):
                    logical, i = self._heredocs(logical, i)
                out.append(logical)
                continue
            pieces = [(0, start, len(line) - len(stripped) + 1)]
            buf = [content]
            length = len(content)
            while more and i < n:
                if check:
                    self._check_length(i)
                line = lines[i]
                i += 1
                stripped = line.lstrip(GO_SPACE)
                if not stripped or stripped[0] == "#":
                    continue  # BuildKit skips these inside a continuation (empty ones with a warning)
                line, more = trim(line)
                pieces.append((length, i, 1))
                buf.append(line)
                length += len(line)
            logical = self._logical(buf[0] if len(buf) == 1 else "".join(buf), pieces, start, i)
            if "<<" in logical.text and can_contain_heredoc(logical.text, self.escape):
                logical, i = self._heredocs(logical, i)
            out.append(logical)
        if not out:
            raise self.error(max(n, 1), 1, "file with no instructions",
                             hint="a Dockerfile needs at least one instruction, e.g. FROM")
        return Prelexed(self.filename, tuple(self.directives), self.escape, tuple(out),
                        tuple(self.lines))

    def _check_length(self, i: int) -> None:
        raw = self.raw[i]
        if len(raw) * 4 >= MAX_LINE_BYTES and len(raw.encode("utf-8", "surrogatepass")) + 1 > MAX_LINE_BYTES:
            raise self.error(i + 1, 1, f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES - 1}")

    def _directive(self, stripped: str, number: int) -> None:
        """BuildKit's DirectiveParser.ParseLine: directives only until the first other line."""
        m = _DIRECTIVE.match(stripped[1:].lstrip(GO_SPACE)) if stripped.startswith("#") else None
        name = m.group(1).lower() if m else ""
        if name not in _KNOWN_DIRECTIVES:
            self.directives_done = True
            return
        if any(k == name for k, _ in self.directives):
            raise self.error(number, 1, f"only one {name} parser directive can be used")
        assert m is not None  # a known name was matched
        value = m.group(2)
        if name == "escape":
            if value not in ("\\", "`"):
                raise self.error(number, 1, f"invalid escape token '{value}' does not match ` or \\",
                                 hint="use # escape=\\ or # escape=`")
            self.escape = value
        self.directives.append((name, value))

    def _trim_continuation(self, line: str) -> tuple[str, bool]:
        """BuildKit's lineContinuationRegex `([^E])E[ \\t]*$|^E[ \\t]*$`, without the regex."""
        escape = self.escape
        body = line.rstrip(" \t") if line[-1:] in (" ", "\t") else line
        if body[-1:] != escape:
            return line, False
        if len(body) > 1 and body[-2] == escape:
            return line, False
        return body[:-1], True

    def _logical(self, joined: str, pieces: list[tuple[int, int, int]], start: int, end: int) -> LogicalLine:
        text = joined.lstrip(GO_SPACE)
        lead = len(joined) - len(text)
        text = text.rstrip(GO_SPACE)
        if lead:
            shifted: list[tuple[int, int, int]] = []
            for off, line, col in pieces:
                if off <= lead:
                    shifted = [(0, line, col + lead - off)]
                else:
                    shifted.append((off - lead, line, col))
            pieces = shifted
        return LogicalLine(text, start, end, max(len(self.lines[end - 1]), 1), tuple(pieces))

    def _heredocs(self, logical: LogicalLine, i: int) -> tuple[LogicalLine, int]:
        """Read the bodies of the heredocs `logical` opens from the lines after it."""
        found = []
        for name, expand, chomp, column in heredocs_from_line(logical.text):
            body: list[str] = []
            while True:
                if i >= len(self.lines):
                    line, col = logical.locate(column)
                    raise DockerfileSyntaxError(
                        nodes.Span(self.filename, line, col, line, col + 1 + len(name)),
                        f"unterminated heredoc {name!r}", kind="parse",
                        hint=f"end the heredoc with a line containing only {name}",
                        source_line=self.lines[line - 1])
                self._check_length(i)
                raw = self.raw[i]
                i += 1
                candidate = self.lines[i - 1].rstrip("\r\n")
                if chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == name:
                    break
                body.append(raw + "\n")
            content = "".join(body)
            if chomp:
                content = re.sub(r"(?m)^\t+", "", content)
            found.append(nodes.Heredoc(name, content, expand, chomp))
        end_text = self.lines[i - 1]
        return LogicalLine(logical.text, logical.start_line, i, max(len(end_text), 1), logical.pieces,
                           tuple(found)), i


def can_contain_heredoc(text: str, escape: str) -> bool:
    """BuildKit's Node.canContainHeredoc: RUN/COPY/ADD (also as ONBUILD trigger), not JSON form."""
    keyword, rest, _ = split_command(text)
    keyword = keyword.lower()
    if keyword == "onbuild":
        _, start = split_flags(rest, escape)
        nested = go_trim(rest[start:])
        if not nested:
            return False
        keyword, rest, _ = split_command(nested)
        keyword = keyword.lower()
    if keyword not in _HEREDOC_INSTRUCTIONS:
        return False
    _, start = split_flags(rest, escape)
    args = go_trim(rest[start:])
    if not args:
        return True
    try:
        return decode_json_array(args) is None
    except NotStringArray:
        return False
