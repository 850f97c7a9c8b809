"""The docker-archive writer on a real (temporary) store: layout of the tar, names, and nothing half-written."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest

from builder.export.docker_archive import familiar_name, write_archive, write_archive_to
from cache import Descriptor, Layer, Store
from cache.errors import StoreError
from cache.model import MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


def image(store, layer_bytes=(b"layer-one", b"layer-two", b"layer-one")):
    layers = []
    for data in layer_bytes:
        desc = store.put_blob(data)
        layers.append(Layer("sha256:" + hashlib.sha256(b"diff" + data).hexdigest(),
                            Descriptor(MEDIA_TYPE_LAYER_GZIP, desc.digest, desc.size)))
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                           "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "size": len(config),
                                      "digest": "sha256:" + hashlib.sha256(config).hexdigest()},
                           "layers": [l.blob.to_oci() for l in layers]}).encode()
    return store.put_image(manifest, config, layers)


def read(data: bytes) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
        return infos, {m.name: tar.extractfile(m).read() for m in infos if m.isfile()}


@pytest.mark.parametrize("full, familiar", [
    ("docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/me/app:v1", "me/app:v1"),
    ("127.0.0.1:5000/me/app:v1", "127.0.0.1:5000/me/app:v1"),
    ("localhost/app:latest", "localhost/app:latest"),
])
def test_familiar_names(full, familiar):
    assert familiar_name(full) == familiar


def test_archive_layout(store):
    record = image(store)
    buf = io.BytesIO()
    write_archive_to(buf, store, record, ["docker.io/me/app:v1", "docker.io/library/app:latest"])
    infos, files = read(buf.getvalue())
    (entry,) = json.loads(files["manifest.json"])
    assert entry["Config"] == "blobs/sha256/" + record.config.digest[7:]
    assert entry["RepoTags"] == ["me/app:v1", "app:latest"]
    assert entry["Layers"] == ["blobs/sha256/" + l.blob.digest[7:] for l in record.layers]
    blob_names = [i.name for i in infos if i.name.startswith("blobs/sha256/") and i.isfile()]
    assert len(blob_names) == len(set(blob_names)) == 4  # two distinct layers, config, manifest
    for name in blob_names:
        assert hashlib.sha256(files[name]).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    assert [(m["digest"], m["annotations"]["org.opencontainers.image.ref.name"]) for m in index["manifests"]] == \
        [(record.manifest.digest, "v1"), (record.manifest.digest, "latest")]
    assert all(i.uid == 0 and i.gid == 0 and i.uname == "" and i.mtime == 0 for i in infos)
    again = io.BytesIO()
    write_archive_to(again, store, record, ["docker.io/me/app:v1", "docker.io/library/app:latest"])
    assert again.getvalue() == buf.getvalue()  # deterministic


def test_write_is_atomic_and_leaves_nothing_on_error(store, tmp_path):
    record = image(store)
    out = tmp_path / "out"
    out.mkdir()
    write_archive(store, out / "a.tar", record, [])
    assert sorted(os.listdir(out)) == ["a.tar"]
    assert json.loads(read((out / "a.tar").read_bytes())[1]["manifest.json"])[0]["RepoTags"] == []
    before = (out / "a.tar").read_bytes()
    os.chmod(store.blob_path(record.layers[1].blob.digest), 0o644)
    store.blob_path(record.layers[1].blob.digest).write_bytes(b"corrupted")
    with pytest.raises(StoreError):
        write_archive(store, out / "a.tar", record, ["docker.io/me/app:v2"])
    assert sorted(os.listdir(out)) == ["a.tar"] and (out / "a.tar").read_bytes() == before
