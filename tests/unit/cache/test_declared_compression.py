"""A layer blob is decoded as its media type declares (OCI, nondistributable and docker layer types), and sniffed
from its magic only where no type is known: an uncompressed tar can begin with gzip's or zstd's magic."""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile

import pytest
import zstandard

from cache import Descriptor, Digest, Layer, StoreError
from cache.compress import decompressed
from cache.model import MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, declared_compression

TAR_BYTES = b"ustar-ish payload " * 64  # what the blob holds once decoded


@pytest.mark.parametrize("media_type, kind", [
    ("application/vnd.oci.image.layer.v1.tar", "uncompressed"),
    ("application/vnd.oci.image.layer.v1.tar+gzip", "gzip"),
    ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"),
    ("application/vnd.docker.image.rootfs.diff.tar", "uncompressed"),
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", "gzip"),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip"),
    ("application/vnd.docker.image.rootfs.diff.tar.zstd", "zstd"),
    ("application/vnd.oci.image.layer.v1.tar+gzip; charset=binary", "gzip"),
    ("application/octet-stream", None), ("", None), (None, None),
])
def test_layer_media_types_declare_their_compression(media_type, kind):
    assert declared_compression(media_type) == kind


def test_a_blob_declared_uncompressed_is_read_as_it_is_even_when_it_begins_with_gzip_magic():
    blob = gzip.compress(TAR_BYTES, mtime=0)  # bytes that are a gzip stream, declared as a plain tar
    for declared in ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar"):
        assert decompressed(io.BytesIO(blob), "l", declared).read() == blob
    assert decompressed(io.BytesIO(blob), "l", "application/vnd.docker.image.rootfs.diff.tar.gzip").read() \
        == TAR_BYTES
    assert decompressed(io.BytesIO(blob), "l").read() == TAR_BYTES  # no type known: sniffed, as before


def test_a_blob_declared_zstd_or_gzip_is_decoded_so_and_fails_naming_the_layer_when_it_does_not_decode():
    blob = zstandard.ZstdCompressor().compress(TAR_BYTES)
    assert decompressed(io.BytesIO(blob), "l", "application/vnd.oci.image.layer.v1.tar+zstd").read() == TAR_BYTES
    broken = gzip.compress(TAR_BYTES, mtime=0)[:40] + b"\xff" * 40
    with pytest.raises(StoreError, match="gzip layer sha256:x does not decompress"):
        decompressed(io.BytesIO(broken), "sha256:x", MEDIA_TYPE_LAYER_GZIP).read()
    with pytest.raises(StoreError, match="zstd layer sha256:y does not decompress"):
        decompressed(io.BytesIO(blob[:20] + b"\0" * 20), "sha256:y", "application/vnd.oci.image.layer.v1.tar+zstd").read()


def test_a_blob_declared_compressed_without_that_magic_is_read_as_its_bytes_are():
    """As containerd's DecompressStream and docker's pull do: a registry or tool that labels a plain (or zstd)
    layer tar+gzip still gives its tar; the diff_id check over those bytes stays the guard."""
    zst = zstandard.ZstdCompressor().compress(TAR_BYTES)
    assert decompressed(io.BytesIO(zst), "l", MEDIA_TYPE_LAYER_GZIP).read() == TAR_BYTES
    assert decompressed(io.BytesIO(TAR_BYTES), "l", MEDIA_TYPE_LAYER_GZIP).read() == TAR_BYTES
    assert decompressed(io.BytesIO(TAR_BYTES), "l", "application/vnd.oci.image.layer.v1.tar+zstd").read() \
        == TAR_BYTES


def _magic_tar() -> bytes:
    """An uncompressed layer tar whose first member's name begins with gzip's magic."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tar:
        for name in ("\x1f\udc8b\x08\x00name", "hello"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    return raw.getvalue()


def test_the_uncompressed_blob_of_a_diff_id_is_never_handed_out_as_its_gzip_form(store):
    """The index keeps blob → diff_id without a type: the blob whose digest is the diff_id is the tar itself."""
    data = _magic_tar()
    assert data.startswith(b"\x1f\x8b")
    tar = store.put_blob(data)
    diff_id = Digest("sha256:" + hashlib.sha256(data).hexdigest())
    assert tar.digest == diff_id
    store._index.add_layer(Layer(diff_id, Descriptor(MEDIA_TYPE_LAYER_TAR, tar.digest, tar.size)))
    gone = Digest("sha256:" + "0" * 64)  # the layer's own (gzip) blob, pruned
    got = store.layer_blob(Layer(diff_id, Descriptor(MEDIA_TYPE_LAYER_GZIP, gone, 1)), "gzip")
    assert got.blob.digest != tar.digest and got.blob.media_type == MEDIA_TYPE_LAYER_GZIP
    with store.open_blob(got.blob.digest) as raw:
        assert gzip.decompress(raw.read()) == data  # made from the tar, read as the tar it is
    plain = store.layer_blob(Layer(diff_id, Descriptor(MEDIA_TYPE_LAYER_GZIP, gone, 1)), "uncompressed")
    assert (plain.blob.digest, plain.blob.media_type) == (tar.digest, MEDIA_TYPE_LAYER_TAR)
