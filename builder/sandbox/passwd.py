"""The one /etc/passwd and /etc/group reader, for USER (builder/sandbox/users.py) and COPY --chown
(builder/ops/fileop.py). Named tuples, not dataclasses: the file-op helper must start without dataclasses
(tests/unit/builder/test_helper_imports.py)."""
from __future__ import annotations

import os
from collections import namedtuple

PasswdEntry = namedtuple("PasswdEntry", "name uid gid home shell")
GroupEntry = namedtuple("GroupEntry", "name gid members")


def _fields(path: str | os.PathLike, minimum: int) -> list[list[str]]:
    """Colon-separated records of a passwd/group style file; missing file → no records."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return []
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line[0] in "+-":  # NIS compat lines are not users
            continue
        parts = line.split(":")
        if len(parts) >= minimum:
            records.append(parts)
    return records


def int_or_none(text: str) -> int | None:
    """A decimal id as passwd files write it (no sign, no spaces), else None."""
    try:
        value = int(text, 10)
    except ValueError:
        return None
    return value if text.strip() == text and not text.startswith("+") else None


def parse_passwd(path: str | os.PathLike) -> list[PasswdEntry]:
    """Entries of an /etc/passwd file; lines with a non-numeric uid or gid are skipped."""
    entries = []
    for parts in _fields(path, 4):
        uid, gid = int_or_none(parts[2]), int_or_none(parts[3])
        if uid is None or gid is None:
            continue
        home = parts[5] if len(parts) > 5 else ""
        shell = parts[6] if len(parts) > 6 else ""
        entries.append(PasswdEntry(parts[0], uid, gid, home, shell))
    return entries


def parse_group(path: str | os.PathLike) -> list[GroupEntry]:
    """Entries of an /etc/group file; lines with a non-numeric gid are skipped."""
    entries = []
    for parts in _fields(path, 3):
        gid = int_or_none(parts[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in parts[3].split(",") if m.strip()) if len(parts) > 3 else ()
        entries.append(GroupEntry(parts[0], gid, members))
    return entries
