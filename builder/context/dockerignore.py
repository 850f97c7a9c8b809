""".dockerignore: reading the file, matching paths, and the filtered walk of the build context.

BuildKit uses moby/patternmatcher (matching, `ignorefile.ReadAll`) and tonistiigi/fsutil (the walk);
this module gives their answers (../shared/conformance/README.md §3):

* `read_patterns` turns the file text into the pattern list (BOM, `#` comments at column 0, trim,
  `!`, path-clean, one leading `/` dropped).
* `PatternMatcher` compiles every pattern once, the way patternmatcher does: a plain string compare
  for literal patterns, a prefix test for `dir/**`, a suffix test for `**/name`, otherwise a regular
  expression. patternmatcher builds a Go (RE2) expression in which `[...]`, `^` and `\\x` keep their
  RE2 meaning; `_re2_to_python` translates that expression so character classes, `[:alpha:]`,
  `\\d`, octal/hex escapes and their errors behave as in Go. Like Go, a pattern whose expression
  does not compile only fails when it is first evaluated ("[z-a]" is accepted by the file syntax).
* `walk` is fsutil's filtered walk: depth-first, names sorted by bytes, symlinks not followed, an
  excluded directory skipped unless an exception (`!pattern`) could re-include something inside it,
  and the not-yet-reported parents of a re-included entry reported just before it.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Go's unicode.IsSpace (strings.TrimSpace); str.strip would also remove U+001C..U+001F.
_GO_SPACES = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
              "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_BOM = "\ufeff"
# patternmatcher's shouldEscape means `.+()|{}$`, but its bitmap sets bit c/8 of a byte, which is
# lost for c >= 64: only these five are escaped, and `|`, `{`, `}` reach RE2 as syntax.
_REGEX_ESCAPED = frozenset("$()+.")
_WILDCARD_CHARS = frozenset("*[]?^\\")  # fsutil: an exception with these may match anywhere
_MAX_RUNE = 0x10FFFF


class DockerignoreError(ValueError):
    """A pattern BuildKit rejects (bad syntax, `!` alone), when building or using the matcher."""


def go_clean(path: str) -> str:
    """Go's path.Clean: collapse `//`, drop `.`, resolve `..` lexically; '' becomes '.'."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def _go_dir(path: str) -> str:
    """Go's filepath.Dir: everything before the last `/`, cleaned."""
    return go_clean(path[:path.rfind("/") + 1])


def read_patterns(text: str) -> list[str]:
    """The pattern list of a .dockerignore file (patternmatcher ignorefile.ReadAll)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line, it does not start an empty one
    patterns = []
    for number, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
        if number == 0 and line.startswith(_BOM):
            line = line[1:]
        if line.startswith("#"):
            continue
        line = line.strip(_GO_SPACES)
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip(_GO_SPACES)
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


@dataclass(frozen=True, slots=True)
class Pattern:
    """One compiled pattern. kind: exact, prefix (`dir/**`), suffix (`**/name`) or regexp."""

    text: str
    exclusion: bool
    kind: str
    regex: re.Pattern[str] | None
    error: str | None = None  # the RE2 compile error, raised when the pattern is first evaluated

    def match(self, path: str) -> bool:
        """Whether this pattern alone matches `path` (no parent directories considered)."""
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[0] == "/" and path == suffix[1:])
        if self.regex is None:
            raise DockerignoreError(f"syntax error in pattern {self.text!r}: {self.error}")
        return self.regex.search(path) is not None

    def literal_prefix(self) -> str:
        """fsutil patternWithoutTrailingGlob: the text without a trailing `/**` or `/*`."""
        text = self.text.removesuffix("/**")
        return text.removesuffix("/*")


@dataclass(frozen=True, slots=True)
class MatchInfo:
    """Per-pattern results for a directory, handed to its children (patternmatcher MatchInfo)."""

    parent_matched: tuple[bool, ...] = ()


class PatternMatcher:
    """A .dockerignore pattern list: `matches(path)` is True when the path is excluded."""

    def __init__(self, patterns: list[str]) -> None:
        compiled = []
        for raw in patterns:
            text = raw.strip(_GO_SPACES)
            if not text:
                continue
            text = go_clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise DockerignoreError('illegal exclusion pattern: "!"')
                text = text[1:]
            try:
                _check_glob_syntax(text)
            except DockerignoreError:
                raise DockerignoreError(f"syntax error in pattern {raw!r}") from None
            compiled.append(_compile(text, exclusion))
        self.patterns: tuple[Pattern, ...] = tuple(compiled)
        self.exclusions = any(p.exclusion for p in compiled)
        # fsutil descends into an excluded directory for any wildcard exception, else by prefix
        self._exception_prefixes = tuple(p.literal_prefix() + "/" for p in compiled if p.exclusion)
        self._wild_exceptions = any(
            p.exclusion and not _WILDCARD_CHARS.isdisjoint(p.literal_prefix()) for p in compiled)

    def matches(self, path: str) -> bool:
        """Is `path` (relative, `/`-separated) excluded? Path-cleaned; the context root never is."""
        path = go_clean(path)
        if path == ".":
            return False
        return self.matches_or_parent_matches(path)

    def matches_or_parent_matches(self, path: str) -> bool:
        """patternmatcher MatchesOrParentMatches: `path` as given, each pattern also tried on its parents."""
        parent = _go_dir(path)
        parents = _parent_prefixes(parent) if parent != "." else ()
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.match(path) or any(pattern.match(p) for p in parents):
                matched = not pattern.exclusion
        return matched

    def matches_with_parents(self, path: str, parent: MatchInfo | None = None) -> tuple[bool, MatchInfo]:
        """patternmatcher MatchesUsingParentResults: reuse the parent directory's per-pattern results.

        Walk from the top: pass the MatchInfo returned for a directory when asking about its entries.
        Without one (None or empty) parents are checked like matches_or_parent_matches.
        """
        inherited = parent.parent_matched if parent else ()
        if inherited and len(inherited) != len(self.patterns):
            raise ValueError("MatchInfo comes from a different matcher")
        parents: tuple[str, ...] | None = None
        matched = False
        results = [False] * len(self.patterns)
        for i, pattern in enumerate(self.patterns):
            hit = inherited[i] if inherited else False
            if not hit:
                if pattern.exclusion != matched:
                    continue
                hit = pattern.match(path)
                if not hit and not inherited:
                    if parents is None:
                        dirname = _go_dir(path)
                        parents = _parent_prefixes(dirname) if dirname != "." else ()
                    hit = any(pattern.match(p) for p in parents)
            results[i] = hit
            if hit:
                matched = not pattern.exclusion
        return matched, MatchInfo(tuple(results))

    def could_match_inside(self, dirpath: str) -> bool:
        """Must a walk descend into excluded `dirpath`? Only if an exception could re-include something."""
        if not self.exclusions:
            return False
        if self._wild_exceptions:
            return True
        prefix = dirpath + "/"
        return any(p.startswith(prefix) for p in self._exception_prefixes)


def _parent_prefixes(dirname: str) -> tuple[str, ...]:
    parts = dirname.split("/")
    return tuple("/".join(parts[:i + 1]) for i in range(len(parts)))


def _check_glob_syntax(pattern: str) -> None:
    """patternmatcher.New's check: Go's filepath.Match(pattern, ".") must not fail.

    filepath.Match only validates the chunks it gets to, so `x[` fails but `x*[` does not.
    """
    name = "."
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if not star:
            return
        for i in range(len(name)):
            if name[i] == "/":
                return
            rest = _match_chunk(chunk, name[i + 1:])
            if rest is not None and (pattern or not rest):
                name = rest
                break
        else:
            return


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """filepath scanChunk: leading stars, then text up to the next `*` outside brackets."""
    stripped = pattern.lstrip("*")
    star = len(stripped) != len(pattern)
    in_range = False
    i = 0
    while i < len(stripped):
        ch = stripped[i]
        if ch == "\\" and i + 1 < len(stripped):
            i += 1
        elif ch == "[":
            in_range = True
        elif ch == "]":
            in_range = False
        elif ch == "*" and not in_range:
            break
        i += 1
    return star, stripped[:i], stripped[i:]


def _match_chunk(chunk: str, name: str) -> str | None:
    """filepath matchChunk: the rest of `name` after `chunk`, None if no match; bad syntax raises."""
    failed = False
    i = 0
    while i < len(chunk):
        failed = failed or not name
        ch = chunk[i]
        if ch == "[":
            code = -1
            if not failed:
                code, name = ord(name[0]), name[1:]
            i += 1
            negated = chunk.startswith("^", i)
            i += negated
            hit, count = False, 0
            while not (chunk.startswith("]", i) and count):
                lo, i = _glob_class_char(chunk, i)
                hi = lo
                if chunk[i] == "-":
                    hi, i = _glob_class_char(chunk, i + 1)
                hit = hit or lo <= code <= hi
                count += 1
            i += 1
            failed = failed or hit == negated
            continue
        if ch == "\\":
            i += 1
            if i >= len(chunk):
                raise DockerignoreError("syntax error in pattern")
        elif ch == "?":
            if not failed:
                failed, name = name[0] == "/", name[1:]
            i += 1
            continue
        if not failed:
            failed, name = chunk[i] != name[0], name[1:]
        i += 1
    return None if failed else name


def _glob_class_char(chunk: str, i: int) -> tuple[int, int]:
    """filepath getEsc: one class character (not `-` or `]`); something must follow it."""
    if i >= len(chunk) or chunk[i] in "-]":
        raise DockerignoreError("syntax error in pattern")
    if chunk[i] == "\\":
        i += 1
        if i >= len(chunk):
            raise DockerignoreError("syntax error in pattern")
    if i + 1 >= len(chunk):
        raise DockerignoreError("syntax error in pattern")
    return ord(chunk[i]), i + 1


def _compile(text: str, exclusion: bool) -> Pattern:
    """patternmatcher Pattern.compile: pick the match kind and build the RE2 expression."""
    reg = ["^"]
    kind = "exact"
    start = 1 if text.startswith(_BOM) else 0  # Go's text/scanner skips a leading BOM
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        first = i == start
        i += 1
        if ch == "*" and i < n and text[i] == "*":
            i += 1
            if i < n and text[i] == "/":
                i += 1
            if i >= n:
                if kind == "exact":
                    kind = "prefix"
                else:
                    reg.append(".*")
                    kind = "regexp"
            else:
                reg.append("(.*/)?")
                kind = "regexp"
            if first:
                kind = "suffix"
        elif ch in "*?":
            reg.append("[^/]*" if ch == "*" else "[^/]")
            kind = "regexp"
        elif ch in _REGEX_ESCAPED:
            reg.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                reg.append("\\" + text[i])
                i += 1
                kind = "regexp"
            else:
                reg.append("\\")  # unreachable: the syntax check rejects a trailing backslash
        elif ch in "[]":
            reg.append(ch)
            kind = "regexp"
        else:
            reg.append(ch)
    if kind != "regexp":
        return Pattern(text, exclusion, kind, None)
    reg.append("$")
    try:
        return Pattern(text, exclusion, kind, re.compile(_re2_to_python("".join(reg)), re.ASCII))
    except _RE2Error as exc:
        return Pattern(text, exclusion, kind, None, str(exc))


class _RE2Error(Exception):
    """An expression Go's regexp package would refuse to compile."""


_PERL = {"d": ((48, 57),), "s": ((9, 10), (12, 13), (32, 32)),
         "w": ((48, 57), (65, 90), (95, 95), (97, 122))}
_POSIX = {"alnum": ((48, 57), (65, 90), (97, 122)), "alpha": ((65, 90), (97, 122)),
          "ascii": ((0, 127),), "blank": ((9, 9), (32, 32)), "cntrl": ((0, 31), (127, 127)),
          "digit": ((48, 57),), "graph": ((33, 126),), "lower": ((97, 122),), "print": ((32, 126),),
          "punct": ((33, 47), (58, 64), (91, 96), (123, 126)), "space": ((9, 13), (32, 32)),
          "upper": ((65, 90),), "word": ((48, 57), (65, 90), (95, 95), (97, 122)),
          "xdigit": ((48, 57), (65, 70), (97, 102))}
_C_ESCAPES = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_OCTAL = "01234567"
_RE2_REPEAT = re.compile(r"\{(0|[1-9][0-9]*)(,(0|[1-9][0-9]*)?)?\}")
_HEX = "0123456789abcdefABCDEF"


def _re2_to_python(expr: str) -> str:
    """Translate the RE2 expression patternmatcher builds into an equivalent Python one.

    `out` holds one entry per atom so a repetition can wrap exactly its operand in `(?:...)`
    (Python refuses `^{2}` and `a*{2}`, RE2 takes the first and rejects the second).
    """
    out: list[str] = []
    atom = -1  # where the operand of a repetition starts in `out`; -1 after `(`, `|` or at the start
    groups: list[int] = []
    last_repeat = False
    i = 0
    while i < len(expr):
        ch = expr[i]
        repeat = _re2_repeat(expr, i) if ch == "{" else ((ch, i + 1) if ch in "*?" else None)
        if repeat is not None:
            if last_repeat:
                raise _RE2Error("invalid nested repetition operator")
            if atom < 0:
                raise _RE2Error("missing argument to repetition operator")
            text, i = repeat
            out[atom:] = ["(?:" + "".join(out[atom:]) + ")" + text]
        elif ch in "|(":
            if ch == "(":
                groups.append(len(out))
            out.append("|" if ch == "|" else "(?:")
            atom, i = -1, i + 1
        elif ch == ")":
            atom, i = groups.pop(), i + 1
            out.append(")")
        else:
            pieces, i = _re2_atom(expr, i)
            if pieces:
                atom = len(out) + len(pieces) - 1
                out.extend(pieces)
        last_repeat = repeat is not None
    return "".join(out)


def _re2_repeat(expr: str, i: int) -> tuple[str, int] | None:
    """RE2 parseRepeat at `{`: `{n}`, `{n,}` or `{n,m}` (no leading zeros), else None: a literal `{`."""
    found = _RE2_REPEAT.match(expr, i)
    if found is None:
        return None
    low, comma, high = found.group(1), found.group(2), found.group(3)
    if int(low) > 1000 or (high is not None and (int(high) > 1000 or int(low) > int(high))):
        raise _RE2Error(f"invalid repeat count: {found.group(0)}")
    return "{" + low + (comma or "") + "}", found.end()


def _re2_atom(expr: str, i: int) -> tuple[list[str], int]:
    """One RE2 atom (or several literals, for `\\Q...\\E`) as Python text."""
    ch = expr[i]
    if ch == "[":
        text, i = _re2_class(expr, i + 1)
        return [text], i
    if ch == "\\":
        return _re2_escape_top(expr, i)
    if ch == "^":
        return ["(?:^)"], i + 1
    if ch == "$":
        return [r"(?:\Z)"], i + 1  # RE2 without (?m): end of text, never before a final newline
    if ch == ".":
        return ["."], i + 1
    return [re.escape(ch)], i + 1


def _re2_escape_top(expr: str, i: int) -> tuple[list[str], int]:
    """An escape outside a class: assertions, `\\Q...\\E`, Perl classes, or one character."""
    kind = expr[i + 1] if i + 1 < len(expr) else ""
    if kind in ("A", "b", "B", "z"):
        return ["(?:\\" + ("Z" if kind == "z" else kind) + ")"], i + 2
    if kind == "Q":
        end = expr.find(r"\E", i + 2)
        literal = expr[i + 2:] if end < 0 else expr[i + 2:end]
        return [re.escape(c) for c in literal], (len(expr) if end < 0 else end + 2)
    if kind == "C":
        raise _RE2Error(r"invalid escape sequence: \C")
    ranges, j = _re2_perl_or_unicode(expr, i)
    if ranges is not None:
        return [_python_class(ranges, negate=False)], j
    code, j = _re2_escape_char(expr, i)
    return [re.escape(chr(code))], j


def _re2_perl_or_unicode(expr: str, i: int) -> tuple[list[tuple[int, int]] | None, int]:
    kind = expr[i + 1] if i + 1 < len(expr) else ""
    if kind in ("p", "P"):
        raise _RE2Error(f"Unicode class escapes (\\{kind}) are not supported by pybuild")
    if kind.lower() in _PERL and kind:
        ranges = list(_PERL[kind.lower()])
        return (_complement(ranges) if kind.isupper() else ranges), i + 2
    return None, i


def _re2_escape_char(expr: str, i: int) -> tuple[int, int]:
    """RE2 parseEscape at expr[i] == '\\': returns (code point, index after the escape)."""
    if i + 1 >= len(expr):
        raise _RE2Error("trailing backslash at end of expression")
    c = expr[i + 1]
    j = i + 2
    if ord(c) < 0x80 and not c.isalnum():
        return ord(c), j
    if c in _OCTAL and (c == "0" or (j < len(expr) and expr[j] in _OCTAL)):
        code = int(c)
        for _ in range(2):
            if j >= len(expr) or expr[j] not in _OCTAL:
                break
            code, j = code * 8 + int(expr[j]), j + 1
        return code, j
    if c == "x":
        if expr.startswith("{", j):
            end = expr.find("}", j + 1)
            digits = expr[j + 1:end] if end > 0 else ""
            if digits and all(d in _HEX for d in digits) and int(digits, 16) <= _MAX_RUNE:
                return int(digits, 16), end + 1
        elif len(expr) >= j + 2 and all(d in _HEX for d in expr[j:j + 2]):
            return int(expr[j:j + 2], 16), j + 2
    if c in _C_ESCAPES:
        return _C_ESCAPES[c], j
    raise _RE2Error(f"invalid escape sequence: \\{c}")


def _re2_class(expr: str, i: int) -> tuple[str, int]:
    """RE2 parseClass from just after `[`: returns the Python class and the index after `]`."""
    negate = expr.startswith("^", i)
    if negate:
        i += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while first or i >= len(expr) or expr[i] != "]":
        first = False
        if i >= len(expr):
            raise _RE2Error("missing closing ]")
        if expr.startswith("[:", i) and len(expr) - i > 2:
            end = expr.find(":]", i + 2)
            if end >= 0:
                ranges.extend(_posix_class(expr[i:end + 2]))
                i = end + 2
                continue
        if expr[i] == "\\":
            perl, j = _re2_perl_or_unicode(expr, i)
            if perl is not None:
                ranges.extend(perl)
                i = j
                continue
        lo, i = _re2_class_char(expr, i)
        hi = lo
        if len(expr) - i >= 2 and expr[i] == "-" and expr[i + 1] != "]":
            hi, i = _re2_class_char(expr, i + 1)
            if hi < lo:
                raise _RE2Error("invalid character class range")
        ranges.append((lo, hi))
    return _python_class(ranges, negate), i + 1


def _re2_class_char(expr: str, i: int) -> tuple[int, int]:
    if i >= len(expr):
        raise _RE2Error("missing closing ]")
    if expr[i] == "\\":
        return _re2_escape_char(expr, i)
    return ord(expr[i]), i + 1


def _posix_class(name: str) -> list[tuple[int, int]]:
    """`[:alpha:]` or `[:^alpha:]` (ASCII, as in RE2)."""
    negate = name.startswith("[:^")
    ranges = _POSIX.get(name[3 if negate else 2:-2])
    if ranges is None:
        raise _RE2Error(f"invalid character class range: {name}")
    return _complement(list(ranges)) if negate else list(ranges)


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, low = [], 0
    for lo, hi in sorted(ranges):
        if lo > low:
            out.append((low, lo - 1))
        low = max(low, hi + 1)
    if low <= _MAX_RUNE:
        out.append((low, _MAX_RUNE))
    return out


def _python_class(ranges: list[tuple[int, int]], negate: bool) -> str:
    if not ranges:
        return "[^\\x00-\\U0010ffff]" if not negate else "[\\x00-\\U0010ffff]"
    items = (f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)
    return "[" + ("^" if negate else "") + "".join(items) + "]"


@dataclass(slots=True)
class _Visited:
    """A directory on the walk stack: its match results and whether it has been reported."""

    path: str
    info: MatchInfo
    stat: os.stat_result
    reported: bool


def walk(root: Path, matcher: PatternMatcher | None) -> Iterator[tuple[str, os.stat_result]]:
    """The build context as BuildKit sends it: (relative `/` path, lstat) in fsutil walk order.

    Raises OSError when a directory that is not excluded cannot be read; entries that vanish
    during the walk are skipped, as in fsutil.
    """
    yield from _walk_dir(os.fspath(root), "", [], matcher)


def _walk_dir(host: str, rel: str, parents: list[_Visited],
              matcher: PatternMatcher | None) -> Iterator[tuple[str, os.stat_result]]:
    try:
        names = sorted(os.listdir(host), key=os.fsencode)
    except (FileNotFoundError, NotADirectoryError):
        return
    except PermissionError:
        if parents and not parents[-1].reported:
            return  # fsutil ignores permission errors inside excluded directories
        raise
    for name in names:
        child_rel = f"{rel}/{name}" if rel else name
        child_host = os.path.join(host, name)
        try:
            st = os.lstat(child_host)
        except FileNotFoundError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        excluded, info = False, MatchInfo()
        if matcher is not None:
            excluded, info = matcher.matches_with_parents(child_rel, parents[-1].info if parents else None)
            if excluded and is_dir and not matcher.could_match_inside(child_rel):
                continue
        if not excluded:
            for parent in parents:
                if not parent.reported:
                    parent.reported = True
                    yield parent.path, parent.stat
            yield child_rel, st
        if is_dir:
            node = _Visited(child_rel, info, st, not excluded)
            yield from _walk_dir(child_host, child_rel, [*parents, node], matcher)
