"""Lazy layer compression: a lazily committed layer is only its snapshot until `Store.layer_blob` makes a blob.

The blobs made later must be byte for byte those an eager commit of the same tree writes, in every compression,
with SOURCE_DATE_EPOCH; a damaged snapshot is refused (its diff_id is checked); GC keeps the snapshot a kept
layer is made from; a crash between commit and export leaves a store that can still export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cache import Store, StoreError
from cache.model import MEDIA_TYPE_LAYER_TAR, media_type_for

from .helpers import EPOCH, build_tree
from .test_crash import REPO, check_store

TREE = [("dir", "etc"), ("file", "etc/conf", b"a=1\n" * 100), ("file", "big.bin", os.urandom(3 << 20)),
        ("symlink", "link", "etc/conf")]


def _commit(store: Store, compression: str | None, epoch: int | None = None, tree=TREE):
    m = store.prepare(None)
    build_tree(m.upper, tree)
    return store.commit(m, compression=compression, source_date_epoch=epoch)


def test_a_lazy_commit_writes_no_blob_and_names_the_layer_by_its_diff_id(store):
    before = set(os.listdir(store.root / "blobs" / "sha256"))
    snap, layer = _commit(store, None)
    assert layer.blob.media_type == MEDIA_TYPE_LAYER_TAR and layer.blob.digest == layer.diff_id
    assert layer.blob.size > 3 << 20
    assert set(os.listdir(store.root / "blobs" / "sha256")) == before
    assert store.has_layer(layer) and not store.has_blob(layer.blob.digest)
    assert snap.diff_id == layer.diff_id


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
@pytest.mark.parametrize("epoch", [None, EPOCH])
def test_the_blob_made_later_is_the_one_an_eager_commit_writes(tmp_path, compression, epoch):
    with Store.open(tmp_path / "eager") as eager, Store.open(tmp_path / "lazy") as lazy:
        _, want = _commit(eager, compression, epoch)
        _, layer = _commit(lazy, None, epoch)
        assert layer.diff_id == want.diff_id
        got = lazy.layer_blob(layer, compression)
        assert got == want
        lazy.verify_blob(got.blob.digest)
        assert lazy.layer_blob(layer, compression) == got  # found again, not made again
        mtime = lazy.blob_path(got.blob.digest).stat().st_mtime_ns
        assert lazy.layer_blob(layer, compression).blob == got.blob
        assert lazy.blob_path(got.blob.digest).stat().st_mtime_ns == mtime


def test_layer_as_is_the_same_function(store):
    _, layer = _commit(store, None)
    assert store.layer_as(layer, "gzip") == store.layer_blob(layer, "gzip")
    assert store.layer_blob(layer, "gzip").blob.media_type == media_type_for("gzip")


def test_any_compression_gives_an_existing_blob_or_makes_gzip(store):
    _, layer = _commit(store, None)
    zst = store.layer_blob(layer, "zstd")
    assert store.layer_blob(layer, None) == zst  # one that exists
    _, eager = _commit(store, "zstd", tree=[("file", "x", b"x")])
    assert store.layer_blob(eager, None) is eager
    _, fresh = _commit(store, None, tree=[("file", "y", b"y")])
    assert store.layer_blob(fresh, None).blob.media_type == media_type_for("gzip")


def test_a_changed_snapshot_is_refused_and_leaves_no_blob(store):
    snap, layer = _commit(store, None)
    os.chmod(snap.path / "etc" / "conf", 0o600)
    (snap.path / "etc" / "conf").write_bytes(b"changed\n")
    before = set(os.listdir(store.root / "blobs" / "sha256"))
    with pytest.raises(StoreError, match=f"unpacks to sha256:[0-9a-f]+, not {layer.diff_id}"):
        store.layer_blob(layer, "gzip")
    assert set(os.listdir(store.root / "blobs" / "sha256")) == before


def test_a_lazy_layer_without_snapshot_or_blob_is_missing(store):
    snap, layer = _commit(store, None)
    store.record("k", parent_key=None, snapshot=snap, layer=layer, description={})
    assert store.lookup("k") is not None
    store.prune(all=True)
    assert not store.has_layer(layer)
    with pytest.raises(StoreError, match="neither a blob nor a snapshot"):
        store.layer_blob(layer, "gzip")


def test_gc_keeps_the_snapshot_a_tagged_image_needs_and_drops_it_with_the_image(store):
    from builder.export.image import layers_manifest

    snap, layer = _commit(store, None)
    store.record("k", parent_key=None, snapshot=snap, layer=layer, description={})
    config = b'{"rootfs":{"type":"layers","diff_ids":["%s"]}}' % layer.diff_id.encode()
    image = store.put_image(layers_manifest(config, [layer]), config, [layer])
    store.tag("docker.io/library/lazy:latest", image.manifest.digest)
    gz = store.layer_blob(layer, "gzip")
    store.prune(all=True)  # the record goes; the image keeps the snapshot its layer is made from
    assert store.lookup("k") is None
    assert store.has_layer(layer)
    assert store.has_blob(gz.blob.digest)  # kept with the layer: made once per compression
    store.blob_path(gz.blob.digest).unlink()  # and if it is lost, made again from the snapshot
    assert store.layer_blob(layer, "gzip") == gz
    store.untag("docker.io/library/lazy:latest")
    store.prune(all=True)
    assert not store.has_layer(layer) and not store.has_blob(gz.blob.digest)


CRASHER = """
import os, sys
sys.path.insert(0, {repo!r})
from cache import Store
store = Store.open({root!r})
m = store.prepare(None)
(m.upper / "f").write_bytes(os.urandom(1 << 20))
snap, layer = store.commit(m, compression=None)
store.record("k", parent_key=None, snapshot=snap, layer=layer, description={{}})
print(layer.diff_id, flush=True)
m = store.prepare(snap)
(m.upper / "g").write_bytes(os.urandom(8 << 20))
print("second", flush=True)
store.commit(m, compression=None)
print("done", flush=True)
"""


def test_a_crash_between_build_and_export_leaves_a_store_that_exports(tmp_path):
    root = tmp_path / "store"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CRASHER).format(repo=str(REPO), root=str(root))],
                             stdout=subprocess.PIPE, text=True)
    try:
        diff_id = child.stdout.readline().strip()
        assert child.stdout.readline().strip() == "second"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    store = check_store(root)
    try:
        record = store.lookup("k")
        assert record is not None and record.layer.diff_id == diff_id
        gz = store.layer_blob(record.layer, "gzip")
        store.verify_blob(gz.blob.digest)
    finally:
        store.close()
    check_store(Path(root)).close()


def test_gc_keeps_one_source_of_a_layer_not_every_snapshot_with_its_diff_id(store):
    """The same COPY over two parents is one diff_id in two snapshots: the tagged image's chain keeps the layer;
    the other chain (an untagged build with a big layer below it) is reclaimed."""
    from builder.export.image import layers_manifest

    keep_base, _ = _commit(store, None, tree=[("file", "keep", b"k")])
    drop_base, _ = _commit(store, None, tree=[("file", "drop", os.urandom(1 << 20))])
    chains = []
    for base in (keep_base, drop_base):
        m = store.prepare(base)
        build_tree(m.upper, [("file", "same", b"same content")])
        chains.append(store.commit(m, compression=None, source_date_epoch=None))
    (keep_top, layer), (drop_top, same) = chains
    assert layer.diff_id == same.diff_id and keep_top.id != drop_top.id
    base_layer = store.snapshot_layer(keep_base.id)
    config = b'{"rootfs":{"type":"layers"}}'
    image = store.put_image(layers_manifest(config, [base_layer, layer]), config, [base_layer, layer])
    store.tag("docker.io/library/keep:latest", image.manifest.digest)
    store.prune(all=True)
    assert store.snapshot(keep_top.id) == keep_top and store.snapshot(keep_base.id) == keep_base
    for gone in (drop_top.id, drop_base.id):
        with pytest.raises(StoreError):
            store.snapshot(gone)
    assert store.layer_blob(layer, "gzip").diff_id == layer.diff_id
