"""Commit: an overlay upperdir becomes the exact canonical tar entries expected."""

from __future__ import annotations

import gzip
import hashlib
import os

import pytest

from cache import StoreError
from cache.compress import GzipCompressor, ZstdCompressor
from cache.model import MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD

from .helpers import EPOCH, build_tree, commit_tree, tar_bytes, tar_entries

# vfs_cap_data v2 (magic 0x02000001, effective): permitted = CAP_NET_BIND_SERVICE (bit 10)
CAP_NET_BIND_SERVICE = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")
T = EPOCH + 100  # helpers.build_tree sets every mtime to this

# (case id, tree spec, expected entries: name, type, mode, uid, gid, size, linkname, mtime, xattrs)
CASES = [
    ("files-dirs-symlinks", [
        ("dir", "etc"), ("file", "etc/hosts", b"127.0.0.1 localhost\n"),
        ("file", "bin/tool", b"#!/bin/sh\n", 0o755), ("symlink", "bin/sh", "tool"),
        ("symlink", "abs", "/etc/hosts"),
    ], [
        ("abs", "2", "0o777", 0, 0, 0, "/etc/hosts", T, {}),
        ("bin/", "5", "0o755", 0, 0, 0, "", T, {}),
        ("bin/sh", "2", "0o777", 0, 0, 0, "tool", T, {}),
        ("bin/tool", "0", "0o755", 0, 0, 10, "", T, {}),
        ("etc/", "5", "0o755", 0, 0, 0, "", T, {}),
        ("etc/hosts", "0", "0o644", 0, 0, 20, "", T, {}),
    ]),
    ("hardlinks-by-inode", [
        ("file", "a/one", b"same inode"), ("hardlink", "a/two", "a/one"), ("hardlink", "z", "a/one"),
        ("file", "a/other", b"same inode"),
    ], [
        ("a/", "5", "0o755", 0, 0, 0, "", T, {}),
        ("a/one", "0", "0o644", 0, 0, 10, "", T, {}),
        ("a/other", "0", "0o644", 0, 0, 10, "", T, {}),
        ("a/two", "1", "0o644", 0, 0, 0, "a/one", T, {}),
        ("z", "1", "0o644", 0, 0, 0, "a/one", T, {}),
    ]),
    ("whiteouts-and-opaque", [
        ("dir", "var/cache"), ("whiteout", "var/cache/old"), ("whiteout", "gone"),
        ("dir", "opq"), ("opaque", "opq"), ("file", "opq/-first", b"1"), ("file", "opq/kept", b"k"),
    ], [
        (".wh.gone", "0", "0o0", 0, 0, 0, "", 0, {}),
        ("opq/", "5", "0o755", 0, 0, 0, "", T, {}),
        ("opq/.wh..wh..opq", "0", "0o0", 0, 0, 0, "", 0, {}),
        ("opq/-first", "0", "0o644", 0, 0, 1, "", T, {}),
        ("opq/kept", "0", "0o644", 0, 0, 1, "", T, {}),
        ("var/", "5", "0o755", 0, 0, 0, "", T, {}),
        ("var/cache/", "5", "0o755", 0, 0, 0, "", T, {}),
        ("var/cache/.wh.old", "0", "0o0", 0, 0, 0, "", 0, {}),
    ]),
    ("owners-modes-xattrs-fifo", [
        ("file", "suid", b"", 0o4755), ("owner", "suid", 1000, 2000), ("dir", "sticky", 0o1777),
        ("file", "cap", b"c"), ("xattr", "cap", "security.capability", CAP_NET_BIND_SERVICE),
        ("xattr", "cap", "user.note", b"hello"), ("xattr", "cap", "user.bin", b"\xff\xfe"), ("xattr", "cap", "trusted.overlay.origin", b"x"),
        ("fifo", "pipe"), ("file", "big-ids", b""), ("owner", "big-ids", 3_000_000, 3_000_001),
    ], [
        ("big-ids", "0", "0o644", 3_000_000, 3_000_001, 0, "", T, {}),
        ("cap", "0", "0o644", 0, 0, 1, "", T,
         {"security.capability": CAP_NET_BIND_SERVICE.decode(), "user.bin": "\udcff\udcfe",
          "user.note": "hello"}),
        ("pipe", "6", "0o644", 0, 0, 0, "", T, {}),
        ("sticky/", "5", "0o1777", 0, 0, 0, "", T, {}),
        ("suid", "0", "0o4755", 1000, 2000, 0, "", T, {}),
    ]),
    ("long-and-unicode-names", [
        ("file", "d/" + "x" * 150, b"long"), ("file", "caf\u00e9", b"u"),
    ], [
        ("caf\u00e9", "0", "0o644", 0, 0, 1, "", T, {}),
        ("d/", "5", "0o755", 0, 0, 0, "", T, {}),
        ("d/" + "x" * 150, "0", "0o644", 0, 0, 4, "", T, {}),
    ]),
]


@pytest.mark.parametrize("spec,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_commit_writes_the_expected_entries(store, needs_root, spec, expected):
    snap, layer = commit_tree(store, spec)
    assert layer is not None and layer.blob.media_type == MEDIA_TYPE_LAYER_GZIP
    data = tar_bytes(store, layer.blob.digest)
    entries = tar_entries(data)
    assert [e[:9] for e in entries] == expected
    assert all(e[9] == "" and e[10] == "" for e in entries), "uname/gname must be empty"
    assert layer.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


def test_fifo_umask_is_normalised_by_mode(store, needs_root):
    # mkfifo honours the umask; the entry records whatever the tree says, here after chmod.
    m = store.prepare(None)
    build_tree(m.upper, [("fifo", "p")])
    os.chmod(m.upper / "p", 0o600)
    _, layer = store.commit(m)
    assert tar_entries(tar_bytes(store, layer.blob.digest))[0][2] == "0o600"


def test_mtimes_are_clamped_to_source_date_epoch(store, needs_root, monkeypatch):
    spec = [("file", "a", b"a")]
    _, layer = commit_tree(store, spec, source_date_epoch=EPOCH)
    entries = tar_entries(tar_bytes(store, layer.blob.digest))
    assert [e[7] for e in entries] == [EPOCH]
    _, layer = commit_tree(store, spec + [("whiteout", "w")], source_date_epoch=EPOCH + 50)
    assert [(e[0], e[7]) for e in tar_entries(tar_bytes(store, layer.blob.digest))] == [
        (".wh.w", EPOCH + 50), ("a", EPOCH + 50)]
    _, layer = commit_tree(store, spec, source_date_epoch=EPOCH + 10_000)  # later than the files: kept
    assert [e[7] for e in tar_entries(tar_bytes(store, layer.blob.digest))] == [T]


def test_the_store_never_reads_source_date_epoch(store, needs_root, monkeypatch):
    """The builder reads the variable once and passes it (builder/options.py); the store only takes it."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    _, layer = commit_tree(store, [("file", "a", b"a")])
    assert [e[7] for e in tar_entries(tar_bytes(store, layer.blob.digest))] == [T]


@pytest.mark.parametrize("name", [".wh.sneaky", "dir/.wh..wh..opq"])
def test_real_whiteout_named_files_are_refused(store, name):
    m = store.prepare(None)
    build_tree(m.upper, [("file", name, b"x")])
    with pytest.raises(StoreError, match="reserved whiteout prefix") as e:
        store.commit(m)
    assert e.value.path is not None and e.value.path.name == name.rsplit("/", 1)[-1]
    store.abort(m)
    assert not m.tmpdir.exists()
    assert os.listdir(store.root / "blobs" / "sha256") == []


@pytest.mark.parametrize("xattr", ["trusted.overlay.metacopy", "trusted.overlay.redirect"])
def test_metacopy_and_redirect_are_refused(store, needs_root, xattr):
    m = store.prepare(None)
    build_tree(m.upper, [("dir", "d"), ("xattr", "d", xattr, b"/x")])
    with pytest.raises(StoreError, match="metacopy=off"):
        store.commit(m)
    store.abort(m)


def test_sockets_are_skipped(store):
    import socket

    m = store.prepare(None)
    (m.upper / "f").write_text("x")
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.fspath(m.upper / "sock"))
    s.close()
    _, layer = store.commit(m)
    assert [e[0] for e in tar_entries(tar_bytes(store, layer.blob.digest))] == ["f"]


def test_empty_upper_gives_no_layer(store):
    m = store.prepare(None)
    assert store.commit(m) == (None, None)
    assert not m.tmpdir.exists()
    parent, _ = commit_tree(store, [("file", "f", b"x")])
    m = store.prepare(parent)
    assert store.commit(m) == (parent, None)


SPEC = [("dir", "etc"), ("file", "etc/a", b"a" * 100_000), ("symlink", "l", "etc/a"),
        ("file", "bin/x", os.urandom(300_000), 0o755), ("hardlink", "bin/y", "bin/x")]


@pytest.mark.parametrize("compression,media_type", [
    ("gzip", MEDIA_TYPE_LAYER_GZIP), ("zstd", MEDIA_TYPE_LAYER_ZSTD),
    ("uncompressed", MEDIA_TYPE_LAYER_TAR)])
def test_equal_trees_give_equal_digests(store, other_store, compression, media_type):
    _, a = commit_tree(store, SPEC, compression=compression)
    _, b = commit_tree(other_store, SPEC, compression=compression)
    assert a == b and a.blob.media_type == media_type
    # the same tree committed again in one store dedups onto the first snapshot
    snap1 = store.snapshot(1)
    snap2, c = commit_tree(store, SPEC, compression=compression)
    assert snap2 == snap1 and c == a


def test_compression_formats_share_the_diff_id(store):
    layers = [commit_tree(store, SPEC, compression=c)[1] for c in ("gzip", "zstd", "uncompressed")]
    assert len({l.diff_id for l in layers}) == 1
    assert len({l.blob.digest for l in layers}) == 3
    assert layers[2].blob.digest == layers[2].diff_id


def test_gzip_header_is_fixed(store):
    _, layer = commit_tree(store, SPEC)
    raw = store.blob_path(layer.blob.digest).read_bytes()
    assert raw[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown
    assert gzip.decompress(raw) == tar_bytes(store, layer.blob.digest)


def test_unknown_compression(store):
    m = store.prepare(None)
    (m.upper / "f").write_text("x")
    with pytest.raises(StoreError, match="unknown compression 'brotli'"):
        store.commit(m, compression="brotli")
    store.abort(m)
    store.abort(m)  # idempotent


@pytest.mark.parametrize("factory", [
    lambda n: ZstdCompressor(threads=n), lambda n: GzipCompressor()], ids=["zstd", "gzip"])
def test_compressed_bytes_do_not_depend_on_the_worker_count(factory):
    data = os.urandom(1 << 20) * 2 + bytes(3 << 20)
    outs = set()
    for workers in (1, 2, 4):
        c = factory(workers)
        outs.add(b"".join(c.compress(data[i:i + 65536]) for i in range(0, len(data), 65536)) + c.flush())
    assert len(outs) == 1
