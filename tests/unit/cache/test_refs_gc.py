"""Images, tags and garbage collection: prune never breaks a tagged image."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from cache import BlobNotFound, Layer, StoreError
from cache.model import MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST

from .helpers import commit_tree, snapshot_dirs


def _image(store, layers: list[Layer], name: str | None = None):
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]}},
                        sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 0},
        "layers": [l.blob.to_oci() for l in layers]}, sort_keys=True).encode()
    image = store.put_image(manifest, config, layers)
    if name:
        store.tag(name, image.manifest.digest)
    return image


def _build(store, key: str, files: dict[str, bytes], parent=None, parent_key=None):
    snap, layer = commit_tree(store, [("file", n, c) for n, c in files.items()], parent=parent)
    store.record(key, parent_key=parent_key, snapshot=snap, layer=layer, description={"k": key})
    return snap, layer


def test_put_image_tag_resolve_untag(store):
    _, layer = commit_tree(store, [("file", "f", b"x")])
    image = _image(store, [layer], "docker.io/me/app:latest")
    assert image.manifest.media_type == MEDIA_TYPE_OCI_MANIFEST
    assert image.config.media_type == MEDIA_TYPE_OCI_CONFIG
    assert image.layers == (layer,)
    assert store.has_blob(image.manifest.digest) and store.has_blob(image.config.digest)
    assert store.resolve("docker.io/me/app:latest") == image
    assert store.resolve("docker.io/me/app:other") is None
    store.tag("docker.io/me/app:v1", image.manifest.digest)
    assert [n for n, _ in store.images()] == ["docker.io/me/app:latest", "docker.io/me/app:v1"]
    store.untag("docker.io/me/app:latest")
    assert store.resolve("docker.io/me/app:latest") is None
    with pytest.raises(StoreError, match="no image named"):
        store.untag("docker.io/me/app:latest")


def test_tag_needs_a_stored_image(store):
    with pytest.raises(StoreError, match="put_image it first"):
        store.tag("x:latest", "sha256:" + "1" * 64)


def test_put_image_needs_layer_blobs(store):
    from cache import Descriptor, Digest

    ghost = Layer(Digest.of(b"t"), Descriptor("application/x", Digest.of(b"c"), 1))
    with pytest.raises(BlobNotFound):
        _image(store, [ghost])


def test_retag_moves_the_name(store):
    _, l1 = commit_tree(store, [("file", "a", b"1")])
    _, l2 = commit_tree(store, [("file", "a", b"2")])
    _image(store, [l1], "app:latest")
    second = _image(store, [l2], "app:latest")
    assert store.resolve("app:latest") == second


def _disk_state(store):
    blobs = sorted(os.listdir(store.root / "blobs" / "sha256"))
    snaps = snapshot_dirs(store.root)
    return blobs, snaps


def test_prune_all_keeps_tagged_images_and_their_snapshots(store):
    base, l1 = _build(store, "k1", {"base": b"b"})
    top, l2 = _build(store, "k2", {"top": b"t"}, parent=base, parent_key="k1")
    image = _image(store, [l1, l2], "app:latest")
    other, l3 = _build(store, "k3", {"other": b"o"}, parent=base, parent_key="k1")
    result = store.prune(all=True)
    assert result["records"] == 3 and result["snapshots"] == 1 and result["blobs"] == 1
    assert store.records() == []
    assert store.resolve("app:latest") == image
    for digest in (image.manifest.digest, image.config.digest, l1.blob.digest, l2.blob.digest):
        store.verify_blob(digest)
    assert store.snapshot(top.id) == top and store.snapshot(base.id) == base
    assert store.lowerdirs(top) == [top.path, base.path] and all(p.is_dir() for p in store.lowerdirs(top))
    assert not store.has_blob(l3.blob.digest)
    with pytest.raises(StoreError):
        store.snapshot(other.id)
    assert not (store.root / "snapshots" / str(other.id)).exists()
    assert store.prune(all=True)["reclaimed"] == 0  # nothing left to do


def test_untag_then_prune_frees_everything(store):
    _, l1 = _build(store, "k1", {"a": b"a"})
    _image(store, [l1], "app:latest")
    store.untag("app:latest")
    store.prune(all=True)
    assert _disk_state(store) == ([], [])
    assert store.usage()["total"] == 0


def test_prune_without_all_keeps_records_and_what_they_use(store):
    base, _ = _build(store, "k1", {"a": b"a"})
    child, _ = _build(store, "k2", {"b": b"b"}, parent=base)
    store.record("k1", parent_key=None, snapshot=None, layer=None, description={})  # k1 dropped base
    dangling, _ = commit_tree(store, [("file", "c", b"c")])  # no record, no tag
    before = _disk_state(store)
    result = store.prune()
    assert result["records"] == 0 and result["snapshots"] == 1
    assert store.snapshot(child.id) and store.snapshot(base.id)  # base is child's lowerdir
    assert len(_disk_state(store)[1]) == len(before[1]) - 1
    with pytest.raises(StoreError):
        store.snapshot(dangling.id)


def test_prune_until_and_keep_storage_remove_least_recently_used(store):
    for i in range(4):
        _build(store, f"k{i}", {f"f{i}": bytes(1000 * (i + 1))})
    now = time.time()
    # age the records through the documented schema: k0 unused for 4000 s … k3 for 1000 s
    with sqlite3.connect(store.root / "index.db") as db:
        for i in range(4):
            db.execute("UPDATE records SET last_used=? WHERE key=?", (now - 1000 * (4 - i), f"k{i}"))
    assert store.prune(until=2500)["records"] == 2
    assert [r.key for r in store.records()] == ["k2", "k3"]
    sizes = {r.key: r.size for r in store.records()}
    keep = sizes["k3"] + 10
    store.prune(keep_storage=keep)
    assert [r.key for r in store.records()] == ["k3"]
    assert store.lookup("k3") is not None


def test_usage_reports_reclaimable_bytes(store):
    _, l1 = _build(store, "k1", {"a": bytes(5000)})
    usage = store.usage()
    assert usage["records"] == 1 and usage["snapshots"] == 1
    assert usage["total"] == usage["blob_bytes"] + usage["snapshot_bytes"]
    assert usage["reclaimable"] == usage["total"]
    _image(store, [l1], "app:latest")
    usage = store.usage()
    assert usage["reclaimable"] == 0 and usage["images"] == 1


def test_prune_spares_fresh_unreferenced_things_while_others_use_the_store(store):
    from cache import Store

    with Store.open(store.root) as other:  # another "process" has the store open
        fresh, layer = commit_tree(other, [("file", "new", b"n")])  # not yet recorded
        image = _image(other, [layer])  # not yet tagged
        loose = other.put_blob(b"a layer being pulled")
        result = store.prune(all=True)
        assert result["snapshots"] == result["images"] == result["blobs"] == 0
        assert store.snapshot(fresh.id) == fresh
        assert store.has_blob(loose.digest) and store.has_blob(image.manifest.digest)
        other.record("k", parent_key=None, snapshot=fresh, layer=layer, description={})
        assert store.lookup("k").snapshot_id == fresh.id
    result = store.prune(all=True)  # alone now: everything unreferenced goes
    assert result["records"] == 1 and result["snapshots"] == 1 and result["images"] == 1
    assert os.listdir(store.root / "blobs" / "sha256") == []
