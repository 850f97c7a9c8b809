"""Go standard-library behaviour that .dockerignore matching depends on, in Python.

patternmatcher (builder.context.dockerignore) leans on two Go packages whose exact behaviour
decides which patterns are errors and what they match:

* `check_match_syntax` is `filepath.Match(pattern, ".")` as patternmatcher.New calls it for its
  syntax check. Go only validates the chunks the matcher reaches, so `x[` is an error but `x*[`
  is accepted (the `x` chunk already fails against ".").
* `re2_to_python` translates the RE2 expression patternmatcher builds into Python `re` syntax with
  RE2's meaning: `[...]` with `[:alpha:]`, `\\d`, octal and hex escapes, `{n,m}` (a literal `{`
  when malformed), `|`, and RE2's errors (reversed ranges, bad escapes, nested repetition).
  Unicode classes (`\\pL`) are refused: Python's `re` has no equivalent.
"""
from __future__ import annotations

import re

MAX_RUNE = 0x10FFFF  # the largest code point, as Go's unicode.MaxRune
_END = r"(?:\Z)"
_END_OR_SLASH = r"(?=/|\Z)"
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


class BadPattern(ValueError):
    """Go's filepath.ErrBadPattern, or an expression Go's regexp package refuses to compile."""


def check_match_syntax(pattern: str) -> None:
    """Raise BadPattern where Go's filepath.Match(pattern, ".") reports ErrBadPattern."""
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
                raise BadPattern("syntax error in pattern")
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
        raise BadPattern("syntax error in pattern")
    if chunk[i] == "\\":
        i += 1
        if i >= len(chunk):
            raise BadPattern("syntax error in pattern")
    if i + 1 >= len(chunk):
        raise BadPattern("syntax error in pattern")
    return ord(chunk[i]), i + 1


def re2_to_python(expr: str, *, end_at_slash: bool = False) -> str:
    """Translate the RE2 expression patternmatcher builds into an equivalent Python one.

    end_at_slash: end-of-text anchors also hold just before a `/`, so one search of a path
    answers "does the expression match the path or one of its parent directories".
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
                raise BadPattern("invalid nested repetition operator")
            if atom < 0:
                raise BadPattern("missing argument to repetition operator")
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
    text = "".join(out)
    # _END only comes from `$` and `\\z`: literal `(` and `?` are always escaped in the output
    return text.replace(_END, _END_OR_SLASH) if end_at_slash else text


def _re2_repeat(expr: str, i: int) -> tuple[str, int] | None:
    """RE2 parseRepeat at `{`: `{n}`, `{n,}` or `{n,m}` (no leading zeros), else None: a literal `{`."""
    found = _RE2_REPEAT.match(expr, i)
    if found is None:
        return None
    low, comma, high = found.group(1), found.group(2), found.group(3)
    if int(low) > 1000 or (high is not None and (int(high) > 1000 or int(low) > int(high))):
        raise BadPattern(f"invalid repeat count: {found.group(0)}")
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
        return [_END], i + 1  # RE2 without (?m): end of text, never before a final newline
    if ch == ".":
        return ["."], i + 1
    return [re.escape(ch)], i + 1


def _re2_escape_top(expr: str, i: int) -> tuple[list[str], int]:
    """An escape outside a class: assertions, `\\Q...\\E`, Perl classes, or one character."""
    kind = expr[i + 1] if i + 1 < len(expr) else ""
    if kind == "z":
        return [_END], i + 2
    if kind in ("A", "b", "B"):
        return ["(?:\\" + kind + ")"], i + 2
    if kind == "Q":
        end = expr.find(r"\E", i + 2)
        literal = expr[i + 2:] if end < 0 else expr[i + 2:end]
        return [re.escape(c) for c in literal], (len(expr) if end < 0 else end + 2)
    if kind == "C":
        raise BadPattern(r"invalid escape sequence: \C")
    ranges, j = _re2_perl_or_unicode(expr, i)
    if ranges is not None:
        return [_python_class(ranges, negate=False)], j
    code, j = _re2_escape_char(expr, i)
    return [re.escape(chr(code))], j


def _re2_perl_or_unicode(expr: str, i: int) -> tuple[list[tuple[int, int]] | None, int]:
    kind = expr[i + 1] if i + 1 < len(expr) else ""
    if kind in ("p", "P"):
        raise BadPattern(f"Unicode class escapes (\\{kind}) are not supported by pybuild")
    if kind.lower() in _PERL and kind:
        ranges = list(_PERL[kind.lower()])
        return (complement(ranges) if kind.isupper() else ranges), i + 2
    return None, i


def _re2_escape_char(expr: str, i: int) -> tuple[int, int]:
    """RE2 parseEscape at expr[i] == '\\': returns (code point, index after the escape)."""
    if i + 1 >= len(expr):
        raise BadPattern("trailing backslash at end of expression")
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
            if digits and all(d in _HEX for d in digits) and int(digits, 16) <= MAX_RUNE:
                return int(digits, 16), end + 1
        elif len(expr) >= j + 2 and all(d in _HEX for d in expr[j:j + 2]):
            return int(expr[j:j + 2], 16), j + 2
    if c in _C_ESCAPES:
        return _C_ESCAPES[c], j
    raise BadPattern(f"invalid escape sequence: \\{c}")


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
            raise BadPattern("missing closing ]")
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
                raise BadPattern("invalid character class range")
        ranges.append((lo, hi))
    return _python_class(ranges, negate), i + 1


def _re2_class_char(expr: str, i: int) -> tuple[int, int]:
    if i >= len(expr):
        raise BadPattern("missing closing ]")
    if expr[i] == "\\":
        return _re2_escape_char(expr, i)
    return ord(expr[i]), i + 1


def _posix_class(name: str) -> list[tuple[int, int]]:
    """`[:alpha:]` or `[:^alpha:]` (ASCII, as in RE2)."""
    negate = name.startswith("[:^")
    ranges = _POSIX.get(name[3 if negate else 2:-2])
    if ranges is None:
        raise BadPattern(f"invalid character class range: {name}")
    return complement(list(ranges)) if negate else list(ranges)


def complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The code points (0..MAX_RUNE) outside ``ranges`` (inclusive pairs), as sorted pairs; linmatch's too."""
    out, low = [], 0
    for lo, hi in sorted(ranges):
        if lo > low:
            out.append((low, lo - 1))
        low = max(low, hi + 1)
    if low <= MAX_RUNE:
        out.append((low, MAX_RUNE))
    return out


def _python_class(ranges: list[tuple[int, int]], negate: bool) -> str:
    if not ranges:
        return "[^\\x00-\\U0010ffff]" if not negate else "[\\x00-\\U0010ffff]"
    items = (f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)
    return "[" + ("^" if negate else "") + "".join(items) + "]"
