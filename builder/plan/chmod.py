"""`COPY/ADD --chmod`: an octal mode, or (BuildKit ≥ dockerfile 1.14) a symbolic one as chmod(1) takes it,
applied to each copied file's own mode: `u+x`, `go-w`, `a=rX`, `u=rwx,g=rx,o=`, `g=u` (no umask: a missing
`who` means all)."""
from __future__ import annotations

import re
import stat

_CLAUSE = re.compile(r"([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)")
_ACTION = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007}  # the bits each class owns (setuid/setgid/sticky included)


def parse_chmod(text: str):
    """An int for an octal mode, a SymbolicMode for a symbolic one; ValueError when it is neither."""
    if re.fullmatch(r"[0-7]{1,4}", text):
        return int(text, 8)
    clauses = text.split(",")
    if not all(_CLAUSE.fullmatch(c) for c in clauses):
        raise ValueError(f"invalid --chmod value {text!r}")
    return SymbolicMode(text)


class SymbolicMode:
    """A symbolic mode; calling it with a file's st_mode gives the new permission bits."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, st_mode: int) -> int:
        mode = stat.S_IMODE(st_mode)
        is_dir = stat.S_ISDIR(st_mode)
        for clause in self.text.split(","):
            match = _CLAUSE.fullmatch(clause)
            assert match is not None  # parse_chmod made this mode from checked clauses only
            who = match.group(1).replace("a", "ugo") or "ugo"
            mask = sum(_WHO[w] for w in set(who))
            for op, perms in _ACTION.findall(match.group(2)):
                bits = _bits(perms, mode, is_dir) & mask
                if op == "+":
                    mode |= bits
                elif op == "-":
                    mode &= ~bits
                else:
                    mode = (mode & ~(mask & ~(0o6000 if is_dir and "s" not in perms else 0))) | bits
        return mode


def _bits(perms: str, mode: int, is_dir: bool) -> int:
    """The bits `perms` names, for every class (the clause's who masks them)."""
    if perms in ("u", "g", "o"):
        shift = {"u": 6, "g": 3, "o": 0}[perms]
        three = (mode >> shift) & 7
        return three << 6 | three << 3 | three
    bits = 0
    for p in perms:
        if p == "r":
            bits |= 0o444
        elif p == "w":
            bits |= 0o222
        elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
            bits |= 0o111
        elif p == "s":
            bits |= 0o6000
        elif p == "t":
            bits |= 0o1000
    return bits
