"""Pushing from a real (temporary) store to an in-process registry that accepts monolithic uploads slowly:
blobs go up side by side (at most UPLOADS at once) with their progress, and the first failure stops the push."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import time
import urllib.parse

import pytest

from builder.export.push import UPLOADS, push_image
from builder.export.registry import Registries, RegistryError
from cache import Store
from tests.httpserve import Handler, serving


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Receiving(Handler):
    """HEAD blob: 404; POST upload: a Location; PUT ?digest=: stores after a pause (or answers 500 for `broken`)."""

    blobs: dict[str, bytes] = {}
    broken: set[str] = set()
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def do_HEAD(self):
        self.reply(404 if self.path.rsplit("/", 1)[1] not in self.blobs else 200, b"")

    def do_POST(self):
        self.send_response(202)
        self.send_header("Location", f"/v2/me/app/blobs/uploads/{os.urandom(4).hex()}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if len(body) < int(self.headers["Content-Length"]):
            return  # the client stopped this upload (another blob failed): nothing to store or check
        if "/manifests/" in self.path:
            return self.reply(201, b"", {"Docker-Content-Digest": digest(body)})
        wanted = urllib.parse.unquote(self.path.split("digest=")[1])
        with Receiving.lock:
            Receiving.in_flight += 1
            Receiving.most = max(Receiving.most, Receiving.in_flight)
        try:
            time.sleep(0.3)
            if wanted in self.broken:
                return self.reply(500, b'{"errors": [{"code": "UNKNOWN", "message": "disk full"}]}')
            assert digest(body) == wanted
            self.blobs[wanted] = body
            self.reply(201, b"")
        finally:
            with Receiving.lock:
                Receiving.in_flight -= 1


@pytest.fixture
def registry():
    Receiving.blobs, Receiving.broken, Receiving.in_flight, Receiving.most = {}, set(), 0, 0
    with serving(Receiving) as host:
        yield host


@pytest.fixture
def image(tmp_path):
    """A stored image of four gzip layers and its config (put straight into a real store)."""
    import gzip

    from cache import Descriptor, Layer

    store = Store.open(tmp_path / "store")
    layers = []
    for i in range(4):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = os.urandom(200_000)
            info = tarfile.TarInfo(f"f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        blob = gzip.compress(buf.getvalue(), mtime=0)
        desc = store.put_blob(blob)
        layers.append(Layer(digest(buf.getvalue()),
                            Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", desc.digest, desc.size)))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [str(l.diff_id) for l in layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest(config), "size": len(config)},
                           "layers": [{"mediaType": l.blob.media_type, "digest": str(l.blob.digest),
                                       "size": l.blob.size} for l in layers]}).encode()
    record = store.put_image(manifest, config, layers)
    yield store, record
    store.close()


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_blobs_go_up_side_by_side_with_progress(registry, image):
    store, record = image
    seen = []
    result = push_image(store, record, f"{registry}/me/app:1", Registries(), progress=lambda *a: seen.append(a))
    wanted = [str(l.blob.digest) for l in record.layers] + [str(record.config.digest)]
    assert sorted(Receiving.blobs) == sorted(wanted) and result.uploaded == 5
    assert 2 <= Receiving.most <= UPLOADS == 3
    for d in wanted:
        mine = [(current, total) for blob, current, total in seen if blob == d]
        size = len(Receiving.blobs[d])
        assert mine[0] == (0, size) and mine[-1] == (size, size)


def test_a_refused_blob_stops_the_push(registry, image):
    store, record = image
    Receiving.broken = {str(record.layers[1].blob.digest)}
    with pytest.raises(RegistryError) as err:
        push_image(store, record, f"{registry}/me/app:1", Registries())
    assert "500" in err.value.message and "disk full" in err.value.message
    assert not [t for t in threading.enumerate() if t.name.startswith("pybuild-push")]
