"""`pull_image(unpack=True)`, what FROM uses: layers are unpacked while they download (the blob is kept on the way,
never read back), the digest is still checked before anything is kept, and a tampering registry leaves nothing."""
from __future__ import annotations

import gzip
import os
import threading
import time

import pytest

from builder.export.pull import pull_image
from builder.export.registry import Registries, RegistryError
from cache import Descriptor, StoreError
from tests.unit.builder.test_pull import Served, digest, publish, served, store  # noqa: F401 (fixtures)

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def descs(record) -> list[Descriptor]:
    return [Descriptor(OCI_GZIP, layer.blob.digest, layer.blob.size) for layer in record.layers]


def assert_nothing_kept(store, bad: str) -> None:
    assert not store.has_blob(bad)
    assert [p.name for p in (store.root / "blobs" / "sha256").iterdir() if p.name.startswith(".tmp-")] == []
    assert os.listdir(store.root / "tmp") == []
    assert not [t for t in threading.enumerate() if t.name.startswith("pybuild-unpack")]


def test_the_layers_are_snapshots_once_pulled(served, store, monkeypatch):
    publish("v1", {"a.txt": b"a" * 5000, "b.txt": b"b"})
    record = pull_image(store, f"{served}/me/app:v1", Registries(), unpack=True)
    assert all(store.has_blob(layer.blob.digest) for layer in record.layers)  # kept for exports and pushes
    monkeypatch.setattr(store._snapshots, "_unpack_all", lambda *a: pytest.fail("FROM unpacked a layer again"))
    top = store.import_layers(None, descs(record))[-1]  # what FROM does: every layer found, none unpacked
    assert str(top.diff_id) == str(record.layers[-1].diff_id)
    lower = store.lowerdirs(top)
    assert (lower[0] / "b.txt").read_bytes() == b"b" and (lower[1] / "a.txt").read_bytes() == b"a" * 5000


@pytest.mark.parametrize("damage", ["content", "short", "long", "middle"])
def test_a_tampered_layer_leaves_nothing(served, store, damage):
    _, blobs = publish("v1", {"a.txt": os.urandom(3000)})
    good = blobs[0]
    middle = len(good) // 2
    bad = {"content": good[:-1] + bytes([good[-1] ^ 1]), "short": good[:-5], "long": good + b"extra",
           "middle": good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1:]}[damage]
    Served.blobs[digest(good)] = bad
    with pytest.raises(RegistryError) as err:
        pull_image(store, f"{served}/me/app:v1", Registries(), unpack=True)
    assert err.value.message.startswith(f"blob {digest(good)}: "), err.value.message  # the digest, not the tar
    assert_nothing_kept(store, digest(good))
    assert store._index.snapshots() == [] and store.resolve(f"{served}/me/app:v1") is None


def test_a_hostile_layer_is_refused_and_not_kept(served, store):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("l")
        link.type, link.linkname = tarfile.SYMTYPE, "/"
        tar.addfile(link)
        evil = tarfile.TarInfo("l/tmp/pwned")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    _, blobs = publish_tars("v1", [buf.getvalue()])
    with pytest.raises(StoreError) as err:  # the right digest, but the safe extractor refuses the tar
        pull_image(store, f"{served}/me/app:v1", Registries(), unpack=True)
    assert digest(blobs[0]) in err.value.message and "through a symlink" in err.value.message
    assert_nothing_kept(store, digest(blobs[0]))


def publish_tars(tag: str, tars: list[bytes]):
    """`publish` for prepared tars."""
    import json

    from builder.export.pull import host_platform

    blobs = [gzip.compress(t, mtime=0) for t in tars]
    config = json.dumps({"architecture": host_platform()[1], "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in tars]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest(config), "size": len(config)},
                           "layers": [{"mediaType": OCI_GZIP, "digest": digest(b), "size": len(b)}
                                      for b in blobs]}).encode()
    Served.blobs.update({digest(b): b for b in [*blobs, config]})
    Served.manifests[tag] = (manifest, "application/vnd.oci.image.manifest.v1+json")
    return manifest, blobs


class Halting(Served):
    """Sends each layer blob up to its middle, then waits until the store shows an unpacked file of it."""

    store_root = None
    seen_before_end: list[bool] = []

    def do_GET(self):
        body = self.layer_requested()
        if body is None:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        half = len(body) // 2
        self.wfile.write(body[:half])
        self.wfile.flush()
        deadline = time.monotonic() + 60  # generous: the assertion is on what was seen, not on how fast
        while time.monotonic() < deadline and not list(self.store_root.glob("tmp/i-*/fs/first")):
            time.sleep(0.01)
        Halting.seen_before_end.append(bool(list(self.store_root.glob("tmp/i-*/fs/first"))))
        self.wfile.write(body[half:])


def test_a_layer_is_unpacked_while_it_downloads(store):
    from tests.httpserve import serving

    Served.manifests, Served.blobs, Served.requests = {}, {}, []
    Halting.store_root, Halting.seen_before_end = store.root, []
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # a small file, then a big incompressible one
        for name, data in (("first", b"1" * 1000), ("second", os.urandom(2 << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    publish_tars("v1", [buf.getvalue()])
    with serving(Halting) as host:
        record = pull_image(store, f"{host}/me/app:v1", Registries(), unpack=True)
    assert Halting.seen_before_end == [True]  # the first file was on disk before the blob's second half was sent
    assert (store.lowerdirs(store.import_layers(None, descs(record))[-1])[0] / "second").stat().st_size == 2 << 20
