"""The unpacker skips the lstat of a name this layer never made and the chown of an entry its new inode already
belongs to: replacing entries, parents made implicitly, owners and set-id modes must come out as before."""

from __future__ import annotations

import os
import stat
import tarfile

from cache.unpack import unpack_layer
from tests.unit.cache.test_unpack_hostile import entry, tar_of

import io


def unpack(tmp_path, *entries):
    dest = tmp_path / "fs"
    dest.mkdir()
    unpack_layer(io.BytesIO(tar_of(*entries)), dest)
    return dest


def test_later_entries_replace_earlier_ones_of_any_kind(tmp_path, needs_root):
    dest = unpack(tmp_path,
                  entry("a", data=b"file"), entry("a/", tarfile.DIRTYPE, mode=0o755), entry("a/x", data=b"x"),
                  entry("b/", tarfile.DIRTYPE), entry("b/y", data=b"y"), entry("b", data=b"now a file"),
                  entry("c", tarfile.SYMTYPE, link="/etc"), entry("c", data=b"not a link"),
                  entry("d", data=b"d1"), entry("d", data=b"d2"), entry("e", data=b"e"),
                  entry("e2", tarfile.LNKTYPE, link="e"), entry("e2", tarfile.SYMTYPE, link="e"),
                  entry("f/", tarfile.DIRTYPE), entry(".wh.f"))
    assert (dest / "a").is_dir() and (dest / "a" / "x").read_bytes() == b"x"
    assert (dest / "b").read_bytes() == b"now a file"
    assert not (dest / "c").is_symlink() and (dest / "c").read_bytes() == b"not a link"
    assert (dest / "d").read_bytes() == b"d2"
    assert os.readlink(dest / "e2") == "e" and (dest / "e").stat().st_nlink == 1
    assert stat.S_ISCHR((dest / "f").lstat().st_mode)  # the whiteout replaced the directory


def test_parents_made_on_the_way_can_be_named_later(tmp_path, needs_root):
    dest = unpack(tmp_path, entry("p/q/r", data=b"r"), entry("p/", tarfile.DIRTYPE, mode=0o711, uid=7),
                  entry("p/q/", tarfile.DIRTYPE, mode=0o700))
    assert (dest / "p" / "q" / "r").read_bytes() == b"r"
    assert stat.S_IMODE((dest / "p").stat().st_mode) == 0o711 and (dest / "p").stat().st_uid == 7


def test_owners_and_set_id_modes(tmp_path, needs_root):
    dest = unpack(tmp_path, entry("root-suid", data=b"s", mode=0o4755), entry("user", data=b"u", uid=1000, gid=2000),
                  entry("user-sgid", data=b"g", mode=0o2755, uid=1000, gid=2000),
                  entry("link", tarfile.SYMTYPE, link="user", uid=1000, gid=2000))
    def owner_mode(name):
        st = (dest / name).lstat()
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
    assert owner_mode("root-suid") == (0, 0, 0o4755)
    assert owner_mode("user") == (1000, 2000, 0o644)
    assert owner_mode("user-sgid") == (1000, 2000, 0o2755)
    assert owner_mode("link")[:2] == (1000, 2000)
