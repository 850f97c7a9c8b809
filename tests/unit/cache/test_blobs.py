"""Blobs: put/get, streaming, verification on read, corruption, idempotence, bad digests."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from cache import BlobNotFound, CorruptBlob, Descriptor, Digest, StoreError

CASES = [b"", b"hello", os.urandom(3 * (1 << 20) + 17)]


@pytest.mark.parametrize("data", CASES, ids=["empty", "small", "3MiB"])
def test_put_blob_names_content_by_sha256(store, data):
    desc = store.put_blob(data)
    assert desc == Descriptor("", "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    assert store.has_blob(desc.digest)
    assert store.blob_path(desc.digest).read_bytes() == data
    with store.open_blob(desc.digest) as f:
        assert f.read() == data


@pytest.mark.parametrize("data", CASES, ids=["empty", "small", "3MiB"])
def test_put_blob_file_streams_the_same_digest(store, data):
    assert store.put_blob_file(io.BytesIO(data)) == store.put_blob(data)


def test_put_is_idempotent_and_leaves_no_temp_files(store):
    a = store.put_blob(b"x" * 1000)
    b = store.put_blob_file(io.BytesIO(b"x" * 1000))
    assert a == b
    names = os.listdir(store.root / "blobs" / "sha256")
    assert names == [Digest(a.digest).hex]


def test_blob_files_are_read_only(store):
    desc = store.put_blob(b"ro")
    assert store.blob_path(desc.digest).stat().st_mode & 0o777 == 0o444


def test_missing_blob(store):
    missing = Digest.of(b"never stored")
    assert not store.has_blob(missing)
    with pytest.raises(BlobNotFound) as e:
        store.blob_path(missing)
    assert e.value.digest == missing
    with pytest.raises(BlobNotFound):
        store.open_blob(missing)


@pytest.mark.parametrize("bad", ["sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64, "../etc/passwd"])
def test_malformed_digest_is_a_store_error(store, bad):
    assert not store.has_blob(bad)
    with pytest.raises(StoreError):
        store.blob_path(bad)


def _corrupt(store, digest: str, data: bytes) -> None:
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_corruption_is_detected_at_eof(store):
    desc = store.put_blob(b"original content")
    _corrupt(store, desc.digest, b"tampered content")
    f = store.open_blob(desc.digest)
    assert f.read(8) == b"tampered"
    with pytest.raises(CorruptBlob) as e:
        f.read()
    assert e.value.digest == desc.digest
    assert e.value.actual == Digest.of(b"tampered content")
    f.close()  # already reported: closing does not raise twice


def test_corruption_is_detected_at_close_after_a_partial_read(store):
    desc = store.put_blob(b"original content")
    _corrupt(store, desc.digest, b"original contenT")
    f = store.open_blob(desc.digest)
    f.read(3)
    with pytest.raises(CorruptBlob) as e:
        f.close()
    assert "removed from the store" in str(e.value) and "--pull" in str(e.value)
    assert not store.has_blob(desc.digest)  # gone: the next put of the right bytes restores it
    assert store.put_blob(b"original content") == desc and store.verify_blob(desc.digest) is None


def test_truncation_is_corruption(store):
    desc = store.put_blob(b"0123456789")
    _corrupt(store, desc.digest, b"01234")
    with pytest.raises(CorruptBlob), store.open_blob(desc.digest) as f:
        f.read()


def test_failed_stream_leaves_no_temp_file(store):
    class Broken(io.RawIOBase):
        def readinto(self, b):
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        store.put_blob_file(Broken())
    assert os.listdir(store.root / "blobs" / "sha256") == []


def test_digest_type():
    d = Digest.of(b"abc")
    assert d == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert d.hex == d[7:] and d.algorithm == "sha256"
    with pytest.raises(ValueError):
        Digest("sha256:short")


def test_descriptor_oci_round_trip():
    d = Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.of(b"x"), 1, (("k", "v"),))
    assert d.to_oci() == {"mediaType": d.media_type, "digest": d.digest, "size": 1,
                          "annotations": {"k": "v"}}
    assert Descriptor.from_oci(d.to_oci()) == d
    assert "annotations" not in Descriptor("t", d.digest, 1).to_oci()
