"""Referees: umoci and GNU tar read our layers, and we read umoci's.

umoci (opencontainers/umoci) is the reference for OCI layer semantics here: it must unpack
the image made of our layers into exactly the tree our stacked snapshots show, and the
layers it generates (with whiteouts) must import into snapshots that show its tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cache import Descriptor, Digest, Layer, Store
from cache.model import MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST
from tests.conftest import require_tool
from tests.integration.test_store_overlay import BASE, change, overlay, view
from tests.unit.cache.helpers import commit_tree, tar_bytes, tar_entries


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


def write_layout(store: Store, layers: list[Layer], layout: Path, tag: str = "latest") -> None:
    """A minimal OCI image layout holding an image made of ``layers``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]}}).encode()
    config_desc = Descriptor(MEDIA_TYPE_OCI_CONFIG, Digest.of(config), len(config))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                           "config": config_desc.to_oci(),
                           "layers": [l.blob.to_oci() for l in layers]}).encode()
    image = store.put_image(manifest, config, layers)
    (layout / "blobs" / "sha256").mkdir(parents=True)
    for desc in [image.manifest, image.config] + [l.blob for l in layers]:
        shutil.copy(store.blob_path(desc.digest), layout / "blobs" / "sha256" / Digest(desc.digest).hex)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = dict(image.manifest.to_oci(), annotations={"org.opencontainers.image.ref.name": tag})
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def test_umoci_unpacks_our_layers_to_our_view(store, tmp_path):
    umoci = require_tool("umoci")
    base, l1 = commit_tree(store, BASE)
    m = store.prepare(base)
    with overlay(tmp_path / "merged", m.lowerdirs, m.upper, m.work) as merged:
        change(merged)
    top, l2 = store.commit(m)
    with overlay(tmp_path / "ro", store.lowerdirs(top)) as ro:
        ours = view(ro)
    write_layout(store, [l1, l2], tmp_path / "layout")
    subprocess.run([umoci, "unpack", "--image", f"{tmp_path / 'layout'}:latest",
                    str(tmp_path / "bundle")], check=True, capture_output=True)
    assert view(tmp_path / "bundle" / "rootfs") == ours


def test_gnu_tar_reads_our_layer(store, tmp_path):
    tar = require_tool("tar")
    _, layer = commit_tree(store, BASE + [("symlink", "etc/link", "motd"),
                                          ("file", "l" * 140, b"long name")])
    data = tar_bytes(store, layer.blob.digest)
    (tmp_path / "layer.tar").write_bytes(data)
    listed = subprocess.run([tar, "-tf", str(tmp_path / "layer.tar")], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    assert listed == [e[0] for e in tar_entries(data)]


def _umoci_image(umoci: str, layout: Path, bundle: Path) -> None:
    """Two umoci layers: a base, then deletions (whiteouts) and a replaced directory (opaque)."""
    def run(*args: str) -> None:
        subprocess.run([umoci, *args], check=True, capture_output=True)

    run("init", "--layout", str(layout))
    run("new", "--image", f"{layout}:t")
    run("unpack", "--image", f"{layout}:t", str(bundle))
    rootfs = bundle / "rootfs"
    (rootfs / "etc").mkdir(exist_ok=True)
    (rootfs / "etc" / "motd").write_text("hi")
    (rootfs / "etc" / "keep").write_text("keep")
    (rootfs / "data").mkdir()
    (rootfs / "data" / "a").write_text("a")
    os.symlink("etc/keep", rootfs / "link")
    run("repack", "--image", f"{layout}:t", str(bundle))
    shutil.rmtree(bundle)  # repack diffs against the unpacked state: unpack the new image again
    run("unpack", "--image", f"{layout}:t", str(bundle))
    (rootfs / "etc" / "motd").unlink()
    shutil.rmtree(rootfs / "data")
    (rootfs / "data").mkdir()
    (rootfs / "data" / "b").write_text("b")
    run("repack", "--image", f"{layout}:t", str(bundle))


def test_we_import_umoci_layers_to_its_view(store, tmp_path):
    umoci = require_tool("umoci")
    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    _umoci_image(umoci, layout, bundle)
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest = json.loads(manifest_path.read_text())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    assert len(manifest["layers"]) == 2
    top_names = subprocess.run(["tar", "-tzf", str(layout / "blobs" / "sha256" / manifest["layers"][1]["digest"][7:])],
                               check=True, capture_output=True, text=True).stdout.split()
    assert "etc/.wh.motd" in top_names and any(".wh." in n and "data" in n for n in top_names), top_names
    snap = None
    for desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
        with open(layout / "blobs" / "sha256" / desc["digest"][7:], "rb") as f:
            assert store.put_blob_file(f).digest == desc["digest"]
        snap = store.import_layer(snap, Descriptor.from_oci(desc))
        assert snap.diff_id == diff_id
    lowers = store.lowerdirs(snap) + ([store.empty_dir()] if len(store.lowerdirs(snap)) == 1 else [])
    with overlay(tmp_path / "ro", lowers) as ro:
        assert view(ro) == view(bundle / "rootfs")
