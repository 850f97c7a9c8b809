"""Hostile base layers: nothing a layer tar says may touch anything outside its own snapshot directory.

Each tar is built here with Python's tarfile; a "host" directory beside the store plays the victim."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from cache import Store, StoreError
from cache.model import Descriptor, MEDIA_TYPE_LAYER_TAR
from cache.unpack import UnpackLimits

T = 1_600_000_000


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644, link: str = "",
          uid: int = 0, gid: int = 0, mtime: int = T) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid, info.mtime = kind, mode, link, uid, gid, mtime
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def tar_of(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return out.getvalue()


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The victim: a host directory with a file, modes and times we can check afterwards."""
    d = tmp_path / "host"
    d.mkdir(mode=0o750)
    (d / "secret").write_text("s")
    os.chmod(d / "secret", 0o600)
    os.utime(d / "secret", (1000, 1000))
    os.utime(d, (2000, 2000))
    return d


def state(p: Path) -> list[tuple]:
    return sorted((str(q), q.lstat().st_mode, q.lstat().st_uid, q.lstat().st_mtime_ns)
                  for q in [p, *p.rglob("*")])


def import_tar(store: Store, data: bytes):
    desc = store.put_blob(data)
    return store.import_layer(None, Descriptor(MEDIA_TYPE_LAYER_TAR, desc.digest, desc.size)), desc.digest


@pytest.mark.parametrize("kind", [tarfile.DIRTYPE, tarfile.REGTYPE])
def test_metadata_is_never_set_through_a_symlink_that_replaced_an_entry(store, host, needs_root, kind):
    """`a/` (mode 7777, owner 1234, an mtime) then `a` -> host: the directory's metadata, set at the end, must not
    land on the host directory (it did: chmod followed the symlink)."""
    before = state(host)
    snap, _ = import_tar(store, tar_of(entry("a/", tarfile.DIRTYPE, mode=0o7777, uid=1234, mtime=5),
                                       entry("a", tarfile.SYMTYPE, link=str(host)),
                                       entry("b", tarfile.SYMTYPE, link=str(host / "secret")),
                                       entry("b/", kind, mode=0o7777, uid=1234, mtime=5)
                                       if kind == tarfile.DIRTYPE else entry("c", mode=0o777)))
    assert state(host) == before
    assert os.readlink(snap.path / "a") == str(host)


@pytest.mark.parametrize("entries", [
    [entry("x", tarfile.SYMTYPE, link="HOST"), entry("x/secret", data=b"pwned", mode=0o7777)],
    [entry("x", tarfile.SYMTYPE, link="HOST"), entry("x/new/", tarfile.DIRTYPE)],
    [entry("x", tarfile.SYMTYPE, link="HOST"), entry("y", tarfile.LNKTYPE, link="x/secret")],
    [entry("y", tarfile.LNKTYPE, link="../host/secret")],
    [entry("../host/secret", data=b"pwned")],
    [entry("/HOST/secret", data=b"pwned")],
    [entry("d/", tarfile.DIRTYPE), entry("d/../../host/secret", data=b"pwned")],
], ids=["file-through-symlink", "dir-through-symlink", "hardlink-through-symlink", "hardlink-out", "dotdot",
        "absolute", "nested-dotdot"])
def test_entries_through_symlinks_or_out_of_the_root_are_refused(store, host, needs_root, entries):
    fixed = []
    for info, data in entries:
        info.name, info.linkname = info.name.replace("/HOST", str(host)), info.linkname.replace("HOST", str(host))
        fixed.append((info, data))
    before = state(host)
    with pytest.raises(StoreError) as err:
        import_tar(store, tar_of(*fixed))
    assert "sha256:" in str(err.value)  # names the layer
    assert state(host) == before


@pytest.mark.parametrize("name", [".wh...", ".wh..", ".wh.", "sub/.wh...", "sub/.wh..", ".wh..wh..opq/x"])
def test_malformed_whiteouts_are_refused_naming_the_layer(store, tmp_path, needs_root, name):
    """`.wh...` would hide `..`: it deleted the directory above the layer's before."""
    parent_entries = sorted(os.listdir(store.root / "tmp"))
    with pytest.raises(StoreError) as err:
        import_tar(store, tar_of(entry("sub/", tarfile.DIRTYPE), entry("sub/keep", data=b"k"), entry(name)))
    message = str(err.value)
    assert "whiteout" in message and "sha256:" in message, message
    assert (store.root / "tmp").is_dir() and (store.root / "snapshots").is_dir()
    assert sorted(os.listdir(store.root / "tmp")) == parent_entries


def test_good_whiteouts_still_work(store, needs_root):
    snap, _ = import_tar(store, tar_of(entry("d/", tarfile.DIRTYPE), entry("d/.wh..wh..opq"), entry(".wh.gone"),
                                       entry("d/.wh..wh.plnk")))
    assert stat.S_ISCHR(os.lstat(snap.path / "gone").st_mode)
    assert os.getxattr(snap.path / "d", "trusted.overlay.opaque") == b"y"


def _bomb(size: int) -> bytes:
    """A gzip'd layer with one file of ``size`` zero bytes (about 1000:1)."""
    info = tarfile.TarInfo("zeros")
    info.size = size
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(info, io.BytesIO(bytes(size)))
    return gzip.compress(raw.getvalue(), compresslevel=9)


def test_a_decompression_bomb_stops_at_the_size_limit(tmp_path, needs_root):
    with Store.open(tmp_path / "s", unpack_limits=UnpackLimits(max_bytes=1 << 20)) as store:
        desc = store.put_blob(_bomb(8 << 20))
        with pytest.raises(StoreError) as err:
            store.import_layer(None, Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", desc.digest,
                                                desc.size))
        assert "limit" in str(err.value) and desc.digest in str(err.value)
        assert os.listdir(store.root / "tmp") == []


def test_a_decompression_bomb_stops_at_the_ratio_limit(tmp_path, needs_root):
    with Store.open(tmp_path / "s", unpack_limits=UnpackLimits(max_ratio=100, ratio_floor=1 << 20)) as store:
        desc = store.put_blob(_bomb(8 << 20))
        with pytest.raises(StoreError, match="ratio"):
            store.import_layer(None, Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", desc.digest,
                                                desc.size))
        small = store.put_blob(_bomb(512 << 10))  # under the floor: any ratio is fine
        store.import_layer(None, Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", small.digest,
                                            small.size))


@pytest.mark.parametrize("name", ["l/.wh.secret", "l/.wh..wh..opq"])
def test_whiteouts_through_a_symlink_are_refused(store, host, needs_root, name):
    """Second pass: a whiteout or opaque marker below `l -> host` would delete or mark the host's entry."""
    before = state(host) + [os.listxattr(host)]
    with pytest.raises(StoreError, match="through a symlink"):
        import_tar(store, tar_of(entry("l", tarfile.SYMTYPE, link=str(host)), entry(name)))
    assert state(host) + [os.listxattr(host)] == before


def test_a_hard_link_to_a_symlink_links_the_symlink_itself(store, host, needs_root):
    """Second pass: `h` hard-linked to `l -> host/secret`, then data written to `h`, must not reach the host file."""
    before = state(host)
    with pytest.raises(StoreError):
        import_tar(store, tar_of(entry("l", tarfile.SYMTYPE, link=str(host / "secret")),
                                 entry("h", tarfile.LNKTYPE, link="l"), entry("h/x", data=b"pwned")))
    snap, _ = import_tar(store, tar_of(entry("l", tarfile.SYMTYPE, link=str(host / "secret")),
                                       entry("h", tarfile.LNKTYPE, link="l")))
    assert os.readlink(snap.path / "h") == str(host / "secret") and state(host) == before


def test_an_inode_bomb_stops_at_the_entry_limit(tmp_path, needs_root):
    """Second pass: empty files cost no bytes, so the byte bounds never see them."""
    with Store.open(tmp_path / "s", unpack_limits=UnpackLimits(max_entries=100)) as store:
        with pytest.raises(StoreError, match="entry limit") as err:
            import_tar(store, tar_of(*[entry(f"f{i}") for i in range(101)]))
        assert "sha256:" in str(err.value) and os.listdir(store.root / "tmp") == []
        import_tar(store, tar_of(*[entry(f"f{i}") for i in range(100)]))


def test_the_last_of_two_directory_entries_of_one_name_wins(store, needs_root):
    snap, _ = import_tar(store, tar_of(entry("d/", tarfile.DIRTYPE, mode=0o700, mtime=5), entry("d", data=b"f"),
                                       entry("d/", tarfile.DIRTYPE, mode=0o751, mtime=7)))
    st = os.stat(snap.path / "d")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o751, 7)
