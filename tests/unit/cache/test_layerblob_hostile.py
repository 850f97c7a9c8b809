"""`Store.layer_blob` against blobs an image only claims: a pulled, loaded or cache-imported image's config says
which diff_id each of its blobs holds, unchecked until something unpacks it; such a claim must never be taken as
another compression of a layer this store built (its export would carry the claimant's files)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

from cache import Descriptor, Layer
from cache.compress import decompressed
from cache.model import media_type_for

from .test_lazy_layers import _commit

TREE = [("dir", "etc"), ("file", "etc/conf", b"mine\n")]


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_blob_an_image_claims_for_a_built_layers_diff_id_is_not_exported_as_that_layer(store):
    _, layer = _commit(store, None, tree=TREE)  # a lazily committed layer of this store's own build
    evil = store.put_blob(gzip.compress(_tar({"etc/conf": b"the attacker's\n"}), mtime=0))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}).encode()  # the claim
    claimed = Layer(layer.diff_id, Descriptor(media_type_for("gzip"), evil.digest, evil.size))
    store.put_image(json.dumps({"schemaVersion": 2, "layers": [], "config": {}}).encode(), config, [claimed])
    got = store.layer_blob(layer, "gzip")
    with store.open_blob(got.blob.digest) as raw:
        tar = decompressed(raw, got.blob.digest).read()
    assert got.blob.digest != evil.digest
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == layer.diff_id


def test_a_read_cut_by_ctrl_c_does_not_make_a_good_blob_corrupt(store):
    """SIGINT during an export: Python raises KeyboardInterrupt at the first call after the blocking read returned,
    so the chunk just read was never hashed; close() then read the rest, found the running hash wrong, reported the
    blob corrupt and unlinked it (seen: `pybuild build --output type=oci,...` Ctrl-C'd gave "corrupt blob", exit 1)."""
    import pytest

    desc = store.put_blob(bytes(range(256)) * 4096)
    reader = store.open_blob(desc.digest)
    reader.read(1000)
    read = reader._f.readinto

    def cut(buf):  # the signal arrives while the read blocks; the handler runs right after it returns
        read(buf)
        raise KeyboardInterrupt

    reader._f.readinto = cut
    with pytest.raises(KeyboardInterrupt):
        reader.read(4096)
    reader.close()  # no CorruptBlob
    assert store.has_blob(desc.digest)
    store.verify_blob(desc.digest)
