"""FROM's layer import (builder/ops/source.py): each layer's content must hash to the diff_id its image
config names, as containerd's unpacker checks ("wrong diff id calculated on extraction")."""
from __future__ import annotations

import gzip

import pytest

from builder.ops.source import execute
from builder.plan.steps import LayerRef, SourceOp
from cache import Store, StoreError
from tests.unit.builder.test_pull import digest as _digest, layer_tar as _tar


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()



def _source(store, tars: list[bytes], diff_ids: list[str]):
    refs = []
    for tar, diff_id in zip(tars, diff_ids):
        desc = store.put_blob(gzip.compress(tar, mtime=0))
        refs.append(LayerRef("application/vnd.oci.image.layer.v1.tar+gzip", str(desc.digest), desc.size, diff_id))
    step = type("S", (), {"op": SourceOp("me/base:1", "sha256:" + "0" * 64, tuple(refs))})()
    return execute(store, step)


def test_layers_whose_content_matches_the_config_are_imported(store):
    tars = [_tar("a", b"a"), _tar("b", b"b")]
    snapshot, layers = _source(store, tars, [_digest(t) for t in tars])
    assert snapshot.diff_id == _digest(tars[1]) and [str(l.diff_id) for l in layers] == [_digest(t) for t in tars]
    assert (snapshot.path / "b").read_bytes() == b"b"


def test_a_layer_whose_content_is_not_the_configs_diff_id_is_refused(store):
    tars = [_tar("a", b"a"), _tar("b", b"b")]
    claimed = _digest(_tar("b", b"something else"))
    with pytest.raises(StoreError) as err:
        _source(store, tars, [_digest(tars[0]), claimed])
    message = str(err.value)
    assert "me/base:1" in message and claimed in message and _digest(tars[1]) in message, message
    assert "layer 2 of 2" in message and "pull" in message, message


def test_a_tampered_layer_blob_of_an_oci_layout_is_refused(store, tmp_path):
    """A layout's blob whose bytes do not hash to its name must not enter the store under another digest."""
    tar = _tar("a", b"a")
    blob = gzip.compress(tar, mtime=0)
    name = _digest(blob)
    (tmp_path / "layout/blobs/sha256").mkdir(parents=True)
    (tmp_path / "layout/blobs/sha256" / name.split(":")[1]).write_bytes(blob[:-8] + b"tampered")
    ref = LayerRef("application/vnd.oci.image.layer.v1.tar+gzip", name, len(blob), _digest(tar))
    step = type("S", (), {"op": SourceOp("oci-layout://x", "sha256:" + "0" * 64, (ref,), str(tmp_path / "layout"))})()
    from builder.errors import PybuildError

    with pytest.raises((StoreError, PybuildError)) as err:  # builder/plan/layout.py checks it as it is read
        execute(store, step)
    assert name in str(err.value) and "does not match its content" in str(err.value), err.value
    assert not store.has_blob(name)
