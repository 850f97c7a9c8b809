"""ADD of a hostile local tar: nothing it says reaches outside the destination (symlink then an entry through it,
metadata through a symlink, hard links out, `..`), owners and directory mtimes are the archive's, a compressed
non-tar is copied as is, and a decompression bomb stops at the bound. The Copier runs here on a plain directory
standing in for the step's mounted root (the helper's mount namespace adds nothing to these checks)."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from builder.ops import fileop
from builder.ops.fileop import Copier, FileOpError, Owner

T = 1_500_000_000

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the archive's owners are set with chown")


def entry(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", uid=0, gid=0, mtime=T):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid, info.mtime = kind, mode, link, uid, gid, mtime
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def write_tar(path: Path, *entries, compress: bool = True) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    path.write_bytes(gzip.compress(raw.getvalue()) if compress else raw.getvalue())
    return path


@pytest.fixture
def world(tmp_path):
    """(image root, host victim directory, archive path)."""
    root, host = tmp_path / "rootfs", tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    host.mkdir(mode=0o750)
    (host / "secret").write_text("s")
    os.chmod(host / "secret", 0o600)
    os.utime(host, (2000, 2000))
    return root, host, tmp_path / "a.tar.gz"


def state(p: Path) -> list:
    return sorted((str(q), q.lstat().st_mode, q.lstat().st_uid, q.lstat().st_mtime_ns, q.read_bytes()
                   if q.is_file() else b"") for q in [p, *p.rglob("*")])


def add(root: Path, archive: Path, dest: str = "/x/", chown: str | None = None) -> None:
    fileop.run_copy({"op": "copy", "sources": [archive.name], "dest": dest, "extract": True, "chown": chown},
                    str(root), str(archive.parent))


@pytest.mark.parametrize("entries", [
    [entry("l", tarfile.SYMTYPE, link="HOST"), entry("l/", tarfile.DIRTYPE, mode=0o7777, uid=1234, mtime=5)],
    [entry("l", tarfile.SYMTYPE, link="HOST"), entry("l/secret", data=b"pwned", mode=0o7777)],
    [entry("l", tarfile.SYMTYPE, link="HOST/secret"), entry("l", tarfile.DIRTYPE, mode=0o7777)],
    [entry("d/", tarfile.DIRTYPE, mode=0o7777, uid=1234, mtime=5), entry("d", tarfile.SYMTYPE, link="HOST")],
    [entry("up", tarfile.SYMTYPE, link="../../../../../../.."), entry("up/HOSTREL/secret", data=b"pwned")],
    [entry("l", tarfile.SYMTYPE, link="HOST"), entry("h", tarfile.LNKTYPE, link="l/secret")],
], ids=["dir-through-symlink", "file-through-symlink", "dir-over-symlink", "dir-then-symlink",
        "relative-symlink-up", "hardlink-through-symlink"])
def test_symlinks_from_the_archive_never_lead_out(world, entries):
    """The first case changed the host directory's mode to 7777 before."""
    root, host, archive = world
    fixed = []
    for info, data in entries:
        info.name = info.name.replace("HOSTREL", str(host).lstrip("/"))
        info.linkname = info.linkname.replace("HOST", str(host))
        fixed.append((info, data))
    before = state(host)
    try:
        add(root, write_tar(archive, *fixed))
    except FileOpError:
        pass  # refusing is fine too; touching the host is not
    assert state(host) == before


@pytest.mark.parametrize("entries, words", [
    ([entry("../escape", data=b"x")], "outside the destination"),
    ([entry("a/../../escape", data=b"x")], "outside the destination"),
    ([entry("/abs", data=b"x")], "outside the destination"),
    ([entry("h", tarfile.LNKTYPE, link="../../host/secret")], "outside the destination"),
    ([entry("h", tarfile.LNKTYPE, link="/etc/passwd")], "outside the destination"),
])
def test_names_out_of_the_destination_are_refused(world, entries, words):
    root, host, archive = world
    before = state(host)
    with pytest.raises(FileOpError, match=words):
        add(root, write_tar(archive, *entries))
    assert state(host) == before and not (root / "escape").exists()


def test_the_archive_owners_modes_and_directory_mtimes_are_kept(world):
    root, _, archive = world
    add(root, write_tar(archive, entry("d/", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1001, mtime=T - 50),
                        entry("d/f", data=b"f", mode=0o4755, uid=1000, gid=1001, mtime=T - 40),
                        entry("d/l", tarfile.SYMTYPE, link="f", uid=1002, gid=1003, mtime=T - 30),
                        entry("d/h", tarfile.LNKTYPE, link="d/f")))
    d = root / "x/d"
    st = {n: os.lstat(d / n) for n in ("f", "l", "h")}
    assert (os.stat(d).st_uid, os.stat(d).st_gid, os.stat(d).st_mode & 0o7777, os.stat(d).st_mtime) == \
           (1000, 1001, 0o750, T - 50)
    assert (st["f"].st_uid, st["f"].st_gid, st["f"].st_mode & 0o7777, st["f"].st_mtime) == (1000, 1001, 0o4755, T - 40)
    assert (st["l"].st_uid, st["l"].st_mtime) == (1002, T - 30) and st["h"].st_ino == st["f"].st_ino


def test_chown_overrides_the_archive_owners(world):
    root, _, archive = world
    add(root, write_tar(archive, entry("f", data=b"f", uid=1000, gid=1001)), chown="7:8")
    st = os.stat(root / "x/f")
    assert (st.st_uid, st.st_gid) == (7, 8)


def test_a_compressed_file_that_is_not_a_tar_is_copied_as_is(world):
    root, _, archive = world
    notes = archive.with_name("notes.txt.gz")
    notes.write_bytes(gzip.compress(b"just notes\n"))
    add(root, notes)
    assert (root / "x/notes.txt.gz").read_bytes() == notes.read_bytes()


def test_a_decompression_bomb_stops_at_the_bound(world, monkeypatch):
    root, _, archive = world
    monkeypatch.setattr(fileop.untar, "MAX_BYTES", 1 << 20)
    with pytest.raises(FileOpError, match="decompression bomb"):
        add(root, write_tar(archive, entry("zeros", data=bytes(4 << 20))))


def test_an_absolute_symlink_resolves_inside_the_destination(world):
    """Second pass: `l -> /` then `l/etc/passwd`: as in docker's chrootarchive the link means the destination,
    so the file lands at <dest>/etc/passwd, not on the image's (or the host's) /etc/passwd."""
    root, _, archive = world
    add(root, write_tar(archive, entry("l", tarfile.SYMTYPE, link="/"), entry("l/etc/passwd", data=b"mine")))
    assert (root / "x/etc/passwd").read_bytes() == b"mine"
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0")
