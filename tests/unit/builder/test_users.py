"""USER resolution against a root filesystem's /etc/passwd and /etc/group (runc/moby GetExecUser rules)."""
from __future__ import annotations

from pathlib import Path

import pytest

from builder.sandbox.users import ExecUser, UserError, lookup_user, parse_group, parse_passwd, resolve_user

PASSWD = """\
# comment lines and blank lines are skipped

root:x:0:0:root:/root:/bin/ash
bin:x:1:1:bin:/bin:/sbin/nologin
+nis-user:x:7:7::/:
broken:x:notanumber:1::/:
app:x:1000:1001:App user:/home/app:/bin/sh
nohome:x:1002:1002
"""
GROUP = """\
root:x:0:root
bin:x:1:root,bin,daemon
wheel:x:10:root, app
app:x:1001:
staff:x:50:app,other
bad:x:zz:app
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize("user, expected", [
    ("", (0, 0, [0, 1, 10])),
    ("root", (0, 0, [0, 1, 10])),
    ("0", (0, 0, [0, 1, 10])),
    ("app", (1000, 1001, [10, 50])),
    ("1000", (1000, 1001, [10, 50])),
    ("app:", (1000, 1001, [10, 50])),  # an empty group is no group
    ("app:staff", (1000, 50, [])),  # an explicit group drops supplementary groups
    ("app:50", (1000, 50, [])),
    ("app:4000", (1000, 4000, [])),  # numeric groups need no entry
    ("1000:0", (1000, 0, [])),
    ("4242", (4242, 0, [])),  # numeric users need no entry, and get gid 0
    ("4242:4242", (4242, 4242, [])),
    (":wheel", (0, 10, [])),  # docker accepts an empty user: root
    ("nohome", (1002, 1002, [])),
    ("bin", (1, 1, [1])),
])
def test_resolve_user(rootfs, user, expected):
    assert resolve_user(rootfs, user) == expected


@pytest.mark.parametrize("user, message", [
    ("nosuch", "unable to find user nosuch: no matching entries in passwd file"),
    ("nosuch:wheel", "unable to find user nosuch: no matching entries in passwd file"),
    ("app:nogroup", "unable to find group nogroup: no matching entries in group file"),
    ("+nis-user", "unable to find user +nis-user: no matching entries in passwd file"),
    ("broken", "unable to find user broken: no matching entries in passwd file"),
    ("99999999999", "uids and gids must be in range 0-2147483647"),
    ("app:99999999999", "uids and gids must be in range 0-2147483647"),
])
def test_unresolvable_users(rootfs, user, message):
    with pytest.raises(UserError) as caught:
        resolve_user(rootfs, user)
    assert str(caught.value) == message


def test_home_comes_from_passwd_or_defaults_to_root_dir(rootfs):
    assert lookup_user(rootfs, "app").home == "/home/app"
    assert lookup_user(rootfs, "nohome").home == "/"
    assert lookup_user(rootfs, "4242") == ExecUser(4242, 0, (), "/", None)


def test_missing_files(tmp_path):
    assert resolve_user(tmp_path, "") == (0, 0, [])
    assert resolve_user(tmp_path, "12:34") == (12, 34, [])
    with pytest.raises(UserError, match="unable to find user app: no matching entries in passwd file"):
        resolve_user(tmp_path, "app")
    with pytest.raises(UserError, match="unable to find group g: no matching entries in group file"):
        resolve_user(tmp_path, "0:g")


def test_parsers_skip_what_is_not_an_entry(rootfs):
    assert [p.name for p in parse_passwd(rootfs / "etc" / "passwd")] == ["root", "bin", "app", "nohome"]
    groups = parse_group(rootfs / "etc" / "group")
    assert [g.name for g in groups] == ["root", "bin", "wheel", "app", "staff"]
    assert groups[2].members == ("root", "app")
