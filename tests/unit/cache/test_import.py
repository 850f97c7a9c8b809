"""import_layer: round trips, whiteout conversion, reuse, and refusal of escaping entries."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
import time

import pytest

from cache import CorruptBlob, StoreError
from cache.model import MEDIA_TYPE_LAYER_TAR

from .helpers import commit_tree, snapshot_dirs, snapshot_tree
from .test_layertar import CAP_NET_BIND_SERVICE

TREE = [
    ("dir", "etc"), ("file", "etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    ("file", "bin/busybox", os.urandom(200_000), 0o755), ("hardlink", "bin/ls", "bin/busybox"),
    ("symlink", "bin/sh", "busybox"), ("symlink", "dangling", "/nowhere"),
    ("dir", "tmp", 0o1777), ("file", "sbin/su", b"su", 0o4755), ("owner", "sbin/su", 0, 42),
    ("file", "ping", b"p"), ("xattr", "ping", "security.capability", CAP_NET_BIND_SERVICE),
    ("xattr", "etc", "user.dir-note", b"d"), ("whiteout", "etc/shadow"), ("dir", "opt"),
    ("opaque", "opt"), ("file", "opt/new", b"n"), ("fifo", "run.fifo"), ("dir", "ro", 0o555),
    ("file", "ro/inside", b"i", 0o400), ("file", "x" * 120 + "/" + "y" * 120, b"deep"),
]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_commit_then_import_gives_an_identical_tree(store, other_store, needs_root, compression):
    snap, layer = commit_tree(store, TREE, compression=compression)
    with store.open_blob(layer.blob.digest) as f:
        assert other_store.put_blob_file(f).digest == layer.blob.digest
    imported = other_store.import_layer(None, layer.blob)
    assert imported.diff_id == layer.diff_id and imported.size == snap.size
    assert snapshot_tree(imported.path) == snapshot_tree(snap.path)
    assert other_store.snapshot_layer(imported.id) == layer


def test_import_reuses_snapshots_and_chains_parents(store, needs_root):
    base, l1 = commit_tree(store, [("file", "a", b"a")])
    top, l2 = commit_tree(store, [("file", "b", b"b")], parent=base)
    assert store.import_layer(None, l1.blob) == base
    assert store.import_layer(base, l2.blob) == top
    assert store.lowerdirs(top) == [top.path, base.path]
    assert store.lowerdirs(None) == [store.empty_dir()]
    rel_base, rel = store.relative_lowerdirs(top)
    assert rel == [f"{top.id}/fs", f"{base.id}/fs"] and [rel_base / r for r in rel] == store.lowerdirs(top)
    assert os.listdir(store.empty_dir()) == [] and store.empty_dir().stat().st_mode & 0o777 == 0o555
    other = store.import_layer(None, l2.blob)  # same layer on another parent: a new snapshot
    assert other.id not in (base.id, top.id) and other.parent is None


def _chain(store, other_store, n: int):
    """n layers committed one over the other in ``store``, their blobs copied into ``other_store``."""
    snaps, blobs, parent = [], [], None
    for i in range(n):
        parent, layer = commit_tree(store, [("file", f"f{i}", os.urandom(400_000)), ("whiteout", f"gone{i}")],
                                    parent=parent)
        with store.open_blob(layer.blob.digest) as f:
            other_store.put_blob_file(f)
        snaps.append(parent)
        blobs.append(layer.blob)
    return snaps, blobs


@pytest.fixture
def unpacks(monkeypatch):
    """Counts the real unpack_layer's calls and the most of them running at once."""
    import cache.unpack

    real, lock = cache.unpack.unpack_layer, threading.Lock()
    seen = {"calls": 0, "now": 0, "most": 0}

    def counted(stream, dest, *limits):
        with lock:
            seen["calls"] += 1
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
        try:
            time.sleep(0.05)  # lets a second unpack start before this one ends, if the caller allows it
            return real(stream, dest, *limits)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(cache.unpack, "unpack_layer", counted)
    return seen


def test_import_layers_unpacks_side_by_side_and_installs_in_order(store, other_store, needs_root, unpacks):
    snaps, blobs = _chain(store, other_store, 4)
    first_two = other_store.import_layers(None, blobs[:2])
    assert unpacks["calls"] == 2
    imported = other_store.import_layers(None, blobs)  # the first two are reused, the other two unpacked
    assert imported[:2] == first_two and unpacks["calls"] == 4 and unpacks["most"] == 2
    assert [s.parent for s in imported] == [None] + [s.id for s in imported[:-1]]
    assert [s.diff_id for s in imported] == [s.diff_id for s in snaps]
    assert [snapshot_tree(s.path) for s in imported] == [snapshot_tree(s.path) for s in snaps]
    assert other_store.import_layers(None, blobs) == imported and unpacks["calls"] == 4
    assert os.listdir(other_store.root / "tmp") == []


def test_import_layers_keeps_nothing_when_one_layer_is_bad(store, other_store, needs_root, unpacks):
    _, blobs = _chain(store, other_store, 3)
    path = other_store.blob_path(blobs[1].digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as err:
        other_store.import_layers(None, blobs)
    assert str(blobs[1].digest) in str(err.value)
    assert snapshot_dirs(other_store.root) == [] and os.listdir(other_store.root / "tmp") == []
    assert not [t for t in threading.enumerate() if t.name.startswith("pybuild-unpack")]


def _tar(entries: list[tuple], fmt=tarfile.PAX_FORMAT) -> bytes:
    """A tar from (name, type, data-or-linkname[, extra]) tuples, names written verbatim."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, arg, *extra in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.type = kind
            data = None
            if kind == tarfile.REGTYPE:
                info.size, data = len(arg), io.BytesIO(arg)
            elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = arg
            if extra:
                info.pax_headers = extra[0]
            tf.addfile(info, data)
    return buf.getvalue()


def _import(store, data: bytes):
    desc = store.put_blob(data)
    return store.import_layer(None, desc)


def test_oci_whiteouts_become_overlay_whiteouts(store, needs_root):
    snap = _import(store, _tar([
        ("./", tarfile.DIRTYPE, None), ("./etc/", tarfile.DIRTYPE, None),
        ("./etc/.wh.motd", tarfile.REGTYPE, b""), ("./var/.wh..wh..opq", tarfile.REGTYPE, b""),
        ("./var/keep", tarfile.REGTYPE, b"k"), ("./.wh..wh.plnk", tarfile.REGTYPE, b""),
        ("./etc/x", tarfile.REGTYPE, b"x", {"SCHILY.xattr.trusted.overlay.opaque": "y"}),
    ]))
    st = os.lstat(snap.path / "etc" / "motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(snap.path / "var", "trusted.overlay.opaque") == b"y"
    assert (snap.path / "var" / "keep").read_bytes() == b"k"
    assert sorted(os.listdir(snap.path)) == ["etc", "var"]  # aufs bookkeeping dropped
    assert "trusted.overlay.opaque" not in os.listxattr(snap.path / "etc" / "x")  # smuggled: dropped


def test_later_entries_replace_earlier_ones(store):
    snap = _import(store, _tar([
        ("a", tarfile.REGTYPE, b"first"), ("a", tarfile.REGTYPE, b"second"),
        ("d", tarfile.REGTYPE, b"file"), ("d", tarfile.DIRTYPE, None), ("d/f", tarfile.REGTYPE, b"f"),
        ("l", tarfile.SYMTYPE, "a"), ("l", tarfile.REGTYPE, b"not a link any more"),
    ]))
    assert (snap.path / "a").read_bytes() == b"second"
    assert (snap.path / "d" / "f").read_bytes() == b"f"
    assert not (snap.path / "l").is_symlink()


ESCAPES = [
    ("dotdot", [("../evil", tarfile.REGTYPE, b"x")], "escapes the layer root"),
    ("inner-dotdot", [("a/../../evil", tarfile.REGTYPE, b"x")], "escapes the layer root"),
    ("absolute", [("/evil", tarfile.REGTYPE, b"x")], "absolute path"),
    ("through-symlink", [("l", tarfile.SYMTYPE, "{outside}"), ("l/evil", tarfile.REGTYPE, b"x")],
     "through a symlink"),
    ("through-relative-symlink", [("l", tarfile.SYMTYPE, "../../../../.."),
                                  ("l/evil", tarfile.REGTYPE, b"x")], "through a symlink"),
    ("hardlink-outside", [("h", tarfile.LNKTYPE, "../../etc/passwd")], "escapes the layer root"),
    ("hardlink-absolute", [("h", tarfile.LNKTYPE, "/etc/passwd")], "absolute path"),
    ("hardlink-to-dir", [("d", tarfile.DIRTYPE, None), ("h", tarfile.LNKTYPE, "d")], "not a file"),
    ("hardlink-through-symlink", [("l", tarfile.SYMTYPE, "{outside}"),
                                  ("h", tarfile.LNKTYPE, "l/evil")], "through a symlink"),
    ("below-a-file", [("f", tarfile.REGTYPE, b"f"), ("f/evil", tarfile.REGTYPE, b"x")],
     "below a non-directory"),
]


@pytest.mark.parametrize("entries,message", [c[1:] for c in ESCAPES], ids=[c[0] for c in ESCAPES])
def test_escaping_entries_are_refused(store, tmp_path, entries, message):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil").write_bytes(b"untouched")
    entries = [(n, k, a.replace("{outside}", str(outside)) if isinstance(a, str) else a)
               for n, k, a in entries]
    with pytest.raises(StoreError, match=message):
        _import(store, _tar(entries, fmt=tarfile.GNU_FORMAT))
    assert (outside / "evil").read_bytes() == b"untouched"
    assert not (tmp_path / "evil").exists() and not (tmp_path / "store" / "evil").exists()
    assert os.listdir(store.root / "tmp") == [] and snapshot_dirs(store.root) == []
    assert store.records() == []


def test_corrupt_blob_is_not_imported(store):
    desc = store.put_blob(_tar([("f", tarfile.REGTYPE, b"content")]))
    path = store.blob_path(desc.digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[600] ^= 1  # inside f's data block: the tar still parses
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBlob):
        store.import_layer(None, desc)
    assert snapshot_dirs(store.root) == [] and os.listdir(store.root / "tmp") == []


def test_truncated_tar_is_a_store_error(store):
    data = _tar([("f", tarfile.REGTYPE, b"x" * 5000)])[:1500]
    with pytest.raises(StoreError, match="read layer tar|unexpected end"):
        _import(store, data)


def _gzip(data: bytes) -> bytes:
    import gzip
    return gzip.compress(data, mtime=0)


def _zstd(data: bytes) -> bytes:
    import zstandard
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("kind, blob, message", [
    ("gzip", lambda tar: _gzip(tar)[:-300], "ended before the end-of-stream"),  # cut short
    ("gzip", lambda tar: _gzip(tar)[:20] + bytes(range(256)) * 4 + _gzip(tar)[1044:], "invalid|incorrect|too many"),
    ("gzip", lambda tar: _gzip(tar) + b"not gzip", "not a gzip|ended before|trailing"),
    ("zstd", lambda tar: _zstd(tar)[:4] + b"\xff" * 64, "corrupt|error|unsupported|reserved"),
], ids=["gzip-truncated", "gzip-bad-deflate", "gzip-trailing-junk", "zstd-bad-data"])
def test_a_broken_compressed_blob_is_a_store_error(store, kind, blob, message):
    """The blob's digest is right (it was stored as given) but its compressed stream is not: a
    StoreError naming the layer, not a zlib or zstd exception, and nothing left behind."""
    tar = _tar([("f", tarfile.REGTYPE, os.urandom(3000)), ("g", tarfile.REGTYPE, b"g" * 3000)])
    data = blob(tar)
    with pytest.raises(StoreError, match=f"(?i){kind} layer sha256:[0-9a-f]{{64}} does not decompress.*({message})"):
        _import(store, data)
    assert snapshot_dirs(store.root) == [] and os.listdir(store.root / "tmp") == []


def test_uncompressed_blob_diff_id_is_its_digest(store):
    data = _tar([("f", tarfile.REGTYPE, b"x")])
    desc = store.put_blob(data)
    snap = store.import_layer(None, desc)
    assert snap.diff_id == desc.digest
    assert store.snapshot_layer(snap.id).blob.media_type == ""  # as given by the caller
    assert MEDIA_TYPE_LAYER_TAR.endswith(".tar")


def test_missing_snapshot_is_a_store_error(store):
    with pytest.raises(StoreError, match="snapshot 42 does not exist"):
        store.snapshot(42)
