"""Builder flags (`--name=value` before an instruction's arguments).

Two parts, both after BuildKit:
- `split_flags`: the lexical rule of parser/split_command.go `extractBuilderFlags` (which leading
  words are flags, quote removal, the escape character, `--` ending the flags);
- `check_flags`: the per-instruction table and rules of instructions/bflag.go (`BFlags.Parse`):
  unknown flag (with a "did you mean"), duplicates, bool/string/strings types, plus the value
  checks instructions/parse.go and the RUN hooks do (durations, retries, network, security).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from grammar.nodes import fast_init

BOOL, STRING, STRINGS, DURATION, INT32 = "bool", "string", "strings", "duration", "int32"

# instruction → {flag name: type}. Instructions missing here accept no flag at all, except the
# ones in IGNORED, whose flags BuildKit never parses (so anything goes, and nothing is checked).
# Every flag here needs a state (implemented or refused) in builder/plan/features.py, or
# tests/unit/builder/test_flag_table.py fails.
ALLOWED: dict[str, dict[str, str]] = {
    "FROM": {"platform": STRING},
    "RUN": {"mount": STRINGS, "network": STRING, "security": STRING, "device": STRINGS},
    "COPY": {"chown": STRING, "from": STRING, "chmod": STRING, "link": BOOL, "exclude": STRINGS,
             "parents": BOOL},
    "ADD": {"chown": STRING, "chmod": STRING, "link": BOOL, "keep-git-dir": BOOL, "checksum": STRING,
            "unpack": BOOL, "exclude": STRINGS},
    "HEALTHCHECK": {"interval": DURATION, "timeout": DURATION, "start-period": DURATION,
                    "start-interval": DURATION, "retries": INT32},
}
IGNORED = frozenset({"ARG", "STOPSIGNAL"})  # BuildKit's parseArg/parseStopSignal skip flags.Parse

_VALID_VALUES = {
    ("RUN", "network"): (("default", "none", "host"), "invalid network mode {value!r}"),
    ("RUN", "security"): (("sandbox", "insecure"), "security {value!r} is not valid"),
}

_ASCII_SPACE = " \t\n\v\f\r"


@fast_init
@dataclass(frozen=True, slots=True)
class FlagWord:
    """One flag word as BuildKit keeps it (`--name=value`, quotes removed) and where it was."""

    text: str
    start: int  # offset of the raw word in the argument text
    end: int  # offset just after it


def split_flags(rest: str, escape: str) -> tuple[list[FlagWord], int]:
    """Split the leading `--flag` words off `rest`; return them and the offset where args start.

    Words are separated by ASCII whitespace; a word must begin with `--` to be a flag; quotes are
    removed and the escape character makes the next character literal (also inside quotes); a
    word that is exactly `--` ends the flags and is dropped. FIXME(byte-level): BuildKit tests
    whitespace per byte here, so it also splits inside a UTF-8 character containing 0x85/0xA0.
    """
    words: list[FlagWord] = []
    pos, n = 0, len(rest)
    while True:
        while pos < n and rest[pos] in _ASCII_SPACE:
            pos += 1
        if pos >= n - 1 or rest[pos] != "-" or rest[pos + 1] != "-":
            return words, pos
        start = pos
        chars: list[str] = []
        quote = ""
        while pos < n:
            ch = rest[pos]
            if not quote and ch in _ASCII_SPACE:
                break
            pos += 1
            if quote and ch == quote:
                quote = ""
                continue
            if not quote and ch in "'\"":
                quote = ch
                continue
            if ch == escape:
                if pos == n:
                    break  # an escape character at the very end is skipped
                ch = rest[pos]
                pos += 1
            chars.append(ch)
        word = "".join(chars)
        if word == "--":
            return words, pos
        if word:
            words.append(FlagWord(word, start, pos))
        if pos >= n:
            return words, n


class FlagError(ValueError):
    """A flag BuildKit rejects; `index` is the offending flag's position, `hint` a suggestion."""

    def __init__(self, message: str, index: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.index, self.hint = message, index, hint


def check_flags(instruction: str, words: list[str] | tuple[str, ...]) -> None:
    """Raise FlagError when BuildKit's instructions.Parse would reject these flag words."""
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    from grammar.errors import suggest  # errors imports nodes only; kept local to avoid cycles

    if instruction in IGNORED:
        return
    table = ALLOWED.get(instruction, {})
    seen: set[str] = set()
    for index, word in enumerate(words):
        flag_name, sep, value = word.partition("=")
        name = flag_name[2:]
        kind = table.get(name)
        if kind is None:
            match = suggest(name, list(table), case_sensitive=True)
            raise FlagError(f"unknown flag: {flag_name}", index,
                            f"did you mean --{match}?" if match else _allowed_hint(instruction))
        if name in seen and kind != STRINGS:
            raise FlagError(f"duplicate flag specified: {flag_name}", index)
        seen.add(name)
        if kind == BOOL:
            if sep and value == "":
                raise FlagError(f"missing a value on flag: {flag_name}", index)
            if value.lower() not in ("true", "false", ""):
                raise FlagError(f"expecting boolean value for flag {flag_name}, not: {value}", index)
            continue
        if not sep:
            raise FlagError(f"missing a value on flag: {flag_name}", index)
        _check_value(instruction, name, kind, value, index)


def _allowed_hint(instruction: str) -> str:
    names = sorted(ALLOWED.get(instruction, {}))
    if not names:
        return f"{instruction} takes no flags"
    return f"{instruction} accepts " + ", ".join(f"--{n}" for n in names)


def _check_value(instruction: str, name: str, kind: str, value: str, index: int) -> None:
    valid = _VALID_VALUES.get((instruction, name))
    if valid and value not in valid[0]:
        raise FlagError(valid[1].format(value=value), index, "one of " + ", ".join(valid[0]))
    if kind == DURATION and value:
        try:
            seconds = parse_duration(value)
        except ValueError as e:
            raise FlagError(str(e), index, 'a duration like "30s", "1m30s" or "500ms"') from None
        if seconds != 0 and seconds < 0.001:
            raise FlagError(f'Interval "{name}" cannot be less than 1ms', index)
    if kind == INT32 and value:
        if not re.fullmatch(r"[+-]?[0-9]+", value) or not -2**31 <= int(value) < 2**31:
            raise FlagError(f'strconv.ParseInt: parsing "{value}": invalid syntax', index)
        if int(value) < 0:
            raise FlagError(f"--{name} cannot be negative ({int(value)})", index)


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([a-zµμ]+)")


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds (`1h2m3.5s`, `-1.5h`, `0`)."""
    s = text
    sign = -1.0 if s.startswith("-") else 1.0
    s = s[1:] if s[:1] in "+-" else s
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m or m.group(1) in ("", ".") or not m.group(1)[0:1].isdigit() and m.group(1)[0] != ".":
            raise ValueError(f'time: invalid duration "{text}"')
        unit = _UNITS.get(m.group(2))
        if unit is None:
            raise ValueError(f'time: unknown unit "{m.group(2)}" in duration "{text}"')
        total += float(m.group(1)) * unit
        pos = m.end()
    return sign * total
