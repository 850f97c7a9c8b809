"""USER → uid, gid and supplementary groups, from the container's own /etc/passwd and /etc/group.

Follows runc/moby `user.GetExecUser` (which BuildKit's RUN uses):
- "" means root (uid 0, gid 0); a name must exist in /etc/passwd; a number need not.
- "user:group": the group is a name from /etc/group or a number; an explicit group disables
  supplementary groups.
- Without an explicit group, the primary gid comes from the passwd entry and the supplementary
  groups are the /etc/group entries listing the user's name (only when the user matched by name
  or uid in /etc/passwd).
- Error wording is moby's ("unable to find user x: no matching entries in passwd file") because
  people search for it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from builder.sandbox.passwd import int_or_none as _int_or_none, parse_group, parse_passwd

MAX_ID = 2**31 - 1
NO_PASSWD_ENTRIES = "no matching entries in passwd file"
NO_GROUP_ENTRIES = "no matching entries in group file"


class UserError(Exception):
    """The USER cannot be resolved in this root filesystem (message is user-facing)."""


@dataclass(frozen=True, slots=True)
class ExecUser:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, in /etc/group order
    home: str  # "/" when the passwd file does not know the user
    name: str | None = None


def _checked_id(value: int) -> int:
    if not 0 <= value <= MAX_ID:
        raise UserError(f"uids and gids must be in range 0-{MAX_ID}")
    return value


def lookup_user(rootfs: str | os.PathLike, user: str) -> ExecUser:
    """Resolve a Dockerfile USER value inside `rootfs` (see the module docstring for the rules)."""
    user_arg, has_group, group_arg = user.partition(":")
    uid_arg = _int_or_none(user_arg)
    passwd = parse_passwd(os.path.join(rootfs, "etc", "passwd"))
    if user_arg == "":
        match = next((p for p in passwd if p.uid == 0), None)
    elif uid_arg is not None:
        match = next((p for p in passwd if p.uid == uid_arg), None)
    else:
        match = next((p for p in passwd if p.name == user_arg), None)
    if match is None and uid_arg is None and user_arg != "":
        raise UserError(f"unable to find user {user_arg}: {NO_PASSWD_ENTRIES}")
    if match is not None:
        uid, gid, home, name = match.uid, match.gid, match.home or "/", match.name
    else:
        uid, gid, home, name = (uid_arg or 0), 0, "/", None
    _checked_id(uid)
    if has_group and group_arg != "":
        return ExecUser(uid, _group_id(rootfs, group_arg), (), home, name)
    groups: tuple[int, ...] = ()
    if name is not None:
        groups = tuple(g.gid for g in parse_group(os.path.join(rootfs, "etc", "group")) if name in g.members)
    return ExecUser(uid, _checked_id(gid), groups, home, name)


def _group_id(rootfs: str | os.PathLike, group_arg: str) -> int:
    gid_arg = _int_or_none(group_arg)
    groups = parse_group(os.path.join(rootfs, "etc", "group"))
    if gid_arg is not None:
        match = next((g for g in groups if g.gid == gid_arg), None)
        return _checked_id(match.gid if match else gid_arg)
    match = next((g for g in groups if g.name == group_arg), None)
    if match is None:
        raise UserError(f"unable to find group {group_arg}: {NO_GROUP_ENTRIES}")
    return _checked_id(match.gid)


def resolve_user(rootfs: str | os.PathLike, user: str) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) for USER `user` in `rootfs`; raises UserError."""
    found = lookup_user(rootfs, user)
    return found.uid, found.gid, list(found.groups)
