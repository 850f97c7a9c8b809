"""LayerSink: diff_id and blob stay right however the stream is cut, and discard leaves nothing behind."""
from __future__ import annotations

import gzip
import hashlib
import os
import random
import threading
from dataclasses import replace

import pytest
import zstandard

from cache.blobs import BlobStore
from cache.compress import COMPRESSORS, LayerSink, decompressed
from cache.tarsink import CHUNK, HASH_THREAD_AFTER, SMALL_WRITE
from cache.errors import Interrupted, StoreError
from cache.model import LAYER_MEDIA_TYPES, Digest, media_type_for, sniffed_media_type


def _payload(n: int) -> bytes:
    half = n // 2
    return os.urandom(half) + bytes(random.Random(1).choices(b"abcdefgh\n", k=n - half))


def _cuts(data: bytes, rng: random.Random):
    """Pieces of every kind tarfile and other writers hand over: tiny, around the thresholds, large,
    as bytes, bytearray and memoryview."""
    i = 0
    sizes = (1, 511, 512, SMALL_WRITE - 1, SMALL_WRITE, CHUNK - 3, CHUNK, CHUNK + 7, 3 * CHUNK)
    while i < len(data):
        n = rng.choice(sizes)
        piece = data[i:i + n]
        kind = rng.randrange(3)
        yield piece if kind == 0 else bytearray(piece) if kind == 1 else memoryview(piece)
        i += n


def test_every_compression_has_a_media_type_and_unknown_names_are_refused():
    assert COMPRESSORS.keys() == LAYER_MEDIA_TYPES.keys()
    with pytest.raises(StoreError, match="unknown compression 'lz4': want one of gzip, uncompressed, zstd"):
        media_type_for("lz4")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "uncompressed"])
def test_diff_id_and_blob_for_any_cutting(tmp_path, compression):
    blobs = BlobStore(tmp_path)
    data = _payload(HASH_THREAD_AFTER + 5 * CHUNK + 12345)  # long enough for the hashing thread
    sink = LayerSink(blobs, compression)
    for piece in _cuts(data, random.Random(compression)):
        assert sink.write(piece) == len(piece)
        if isinstance(piece, bytearray):
            piece[:] = b"\0" * len(piece)  # the caller reuses its buffer: the sink must have copied
    diff_id, desc = sink.finish()
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert sink.uncompressed_size == len(data)
    raw = blobs.path_for(desc.digest).read_bytes()
    assert desc.size == len(raw) and desc.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert desc.media_type == media_type_for(compression) == sniffed_media_type(raw[:4])
    with open(blobs.path_for(desc.digest), "rb") as f:
        assert decompressed(f).read() == data
    if compression == "gzip":
        assert gzip.decompress(raw) == data
    elif compression == "zstd":
        assert zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read() == data


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_equal_bytes_equal_blob(tmp_path, compression):
    data = _payload(3 * CHUNK)
    digests = set()
    for seed in range(3):
        sink = LayerSink(BlobStore(tmp_path / str(seed)), compression)
        for piece in _cuts(data, random.Random(seed)):
            sink.write(piece)
        digests.add(sink.finish()[1].digest)
    assert len(digests) == 1


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_discard_mid_stream_stops_threads_and_leaves_no_file(tmp_path, compression):
    blobs = BlobStore(tmp_path)
    before = {t.ident for t in threading.enumerate()}
    sink = LayerSink(blobs, compression)
    data = _payload(HASH_THREAD_AFTER + 2 * CHUNK)
    sink.write(data)
    assert any(t.name == "pybuild-diff-id" for t in threading.enumerate())
    sink.discard()
    sink.discard()  # idempotent
    assert not [t for t in threading.enumerate() if t.ident not in before and t.name == "pybuild-diff-id"]
    assert list(blobs.dir.iterdir()) == []
    with pytest.raises(StoreError, match="after finish or discard"):
        sink.write(data)


class _LazyHasher:
    """Keeps the chunks it is given and hashes them only at the end, as a lagging thread would."""

    def __init__(self) -> None:
        self.chunks: list = []

    def update(self, chunk) -> None:
        self.chunks.append(chunk)

    def hexdigest(self) -> str:
        return hashlib.sha256(b"".join(self.chunks)).hexdigest()

    def close(self) -> None:
        pass


def test_buffers_reused_by_the_caller_are_copied_before_queueing(tmp_path, monkeypatch):
    monkeypatch.setattr("cache.tarsink._DiffHasher", _LazyHasher)
    data = _payload(4 * CHUNK)
    sink = LayerSink(BlobStore(tmp_path), "zstd")
    buf = bytearray(CHUNK)
    for i in range(0, len(data), CHUNK):
        buf[:] = data[i:i + CHUNK]
        sink.write(memoryview(buf) if i % 2 else buf)
    assert sink.finish()[0] == "sha256:" + hashlib.sha256(data).hexdigest()


def _big_layer(store):
    m = store.prepare(None)
    (m.upper / "data.bin").write_bytes(_payload(3 * CHUNK))
    (m.upper / "small.txt").write_text("x\n")
    return store.commit(m, compression="gzip")[1]


def test_layer_as_recompresses_once_and_keeps_the_diff_id(store):
    layer = _big_layer(store)
    assert store.layer_as(layer, "gzip") is layer
    zst = store.layer_as(layer, "zstd")
    assert zst.diff_id == layer.diff_id and zst.blob.media_type.endswith("+zstd")
    assert zst.blob.digest != layer.blob.digest
    store.verify_blob(zst.blob.digest)
    with store.open_blob(zst.blob.digest) as a, store.open_blob(layer.blob.digest) as b:
        assert decompressed(a).read() == decompressed(b).read()
    assert store.layer_as(layer, "zstd") == zst  # found again, not made again
    assert store.layer_as(zst, "gzip") == layer  # and back: the original blob
    raw = store.layer_as(layer, "uncompressed")
    assert raw.blob.media_type.endswith(".tar") and raw.blob.size > 3 * CHUNK
    with pytest.raises(StoreError, match="unknown compression 'lz4'"):
        store.layer_as(layer, "lz4")


def test_layer_as_refuses_a_blob_that_does_not_hold_the_diff_id(store):
    layer = _big_layer(store)
    wrong = type(layer)(Digest.from_hex("0" * 64), layer.blob)
    with pytest.raises(StoreError, match="unpacks to sha256:"):
        store.layer_as(wrong, "zstd")


def test_layer_as_names_a_blob_that_does_not_decompress(store):
    """A stored gzip blob cut short (its digest is its own: it was stored so) cannot be re-compressed:
    the error names it, and no new blob is left."""
    good = _big_layer(store)
    with store.open_blob(good.blob.digest) as f:
        tar = gzip.decompress(f.read())
    cut = replace(store.put_blob(gzip.compress(tar, mtime=0)[:-100]), media_type=media_type_for("gzip"))
    before = set(store.blob_path(cut.digest).parent.iterdir())
    layer = replace(good, blob=cut)
    with pytest.raises(StoreError, match=f"gzip layer {cut.digest} does not decompress"):
        store.layer_as(layer, "zstd")
    assert set(store.blob_path(cut.digest).parent.iterdir()) == before


def test_layer_as_cancelled_keeps_nothing(store):
    layer = _big_layer(store)
    before = set(store.blob_path(layer.blob.digest).parent.iterdir())
    polls = []
    with pytest.raises(Interrupted):
        store.layer_as(layer, "zstd", cancelled=lambda: polls.append(1) or len(polls) > 2)
    assert set(store.blob_path(layer.blob.digest).parent.iterdir()) == before
    assert store.layer_as(layer, "zstd").blob.media_type.endswith("+zstd")
