"""A layer is decompressed as its manifest declares, never as its first bytes suggest: an uncompressed layer tar
whose first member's name begins with gzip's magic (and whose gzip reading is another, valid tar) is pulled from a
registry and loaded from an OCI layout, and the image has the declared tar's files, its diff_id checked."""
from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from tests.integration.conftest import Pybuild
from tests.integration.registry import push_raw, start_registry

T = 1_500_000_000
TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DECLARED = b"A: the declared tar\n"
GZIP_READING = b"B: the gzip reading\n"


def tar_of(*members: tuple[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), T, 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def polyglot() -> bytes:
    """A valid tar (`hello` = DECLARED) that is also a valid gzip stream of another tar (`hello` = GZIP_READING):
    the first member's name is a gzip header whose FEXTRA field (skipped by gzip readers) spans the whole tar,
    and the deflate data follows the tar's end-of-archive blocks (which tar readers stop at)."""
    size = len(tar_of(("x" * 14, b"first member\n"), ("hello", DECLARED)))
    header = b"\x1f\x8b\x08\x04AAAA\x02\xff" + struct.pack("<H", size - 12)  # FLG=FEXTRA, XLEN: the rest of the tar
    outer = tar_of(((header + b"poly").decode("utf-8", "surrogateescape"), b"first member\n"), ("hello", DECLARED))
    assert len(outer) == size and outer.startswith(header)
    inner = tar_of(("hello", GZIP_READING), ("b-only", b""))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    return outer + deflate.compress(inner) + deflate.flush() + struct.pack("<II", zlib.crc32(inner), len(inner))


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image_parts(layer: bytes, media_type: str) -> tuple[bytes, bytes, bytes]:
    """(config, manifest) of a one-layer image whose layer is ``layer`` declared as ``media_type``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest_of(config), "size": len(config)},
                           "layers": [{"mediaType": media_type, "digest": digest_of(layer),
                                       "size": len(layer)}]}).encode()
    return layer, config, manifest


def push(host: str, repo: str, layer: bytes, media_type: str) -> None:
    layer, config, manifest = image_parts(layer, media_type)
    push_raw(host, repo, [layer, config], manifest)


def oci_layout(dest: Path, layer: bytes, media_type: str, name: str) -> None:
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in image_parts(layer, media_type):
        (blobs / digest_of(data)[7:]).write_bytes(data)
    manifest = image_parts(layer, media_type)[2]
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(manifest),
        "size": len(manifest), "annotations": {"io.containerd.image.name": name}}]}))


def exported_hello(pybuild: Pybuild, base: str, tmp_path: Path) -> bytes:
    """Build `FROM base` and export its files: the content of /hello."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\n")
    out = tmp_path / "out"
    pybuild("build", "-o", f"type=local,dest={out}", str(ctx))
    return (out / "hello").read_bytes()


def test_the_crafted_layer_is_a_tar_and_a_gzip_stream_of_another_tar():
    import gzip

    layer = polyglot()
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r|") as tar:
        assert [(m.name[:2], tar.extractfile(m).read()) for m in tar][1] == ("he", DECLARED)  # type: ignore
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r|") as tar:
        assert [tar.extractfile(m).read() for m in tar] == [GZIP_READING, b""]  # type: ignore


@pytest.mark.slow
@pytest.mark.parametrize("media_type", [TAR, DOCKER_TAR])
def test_a_pulled_uncompressed_layer_with_gzip_magic_is_read_as_the_tar_it_declares(tmp_path, media_type):
    registry = start_registry(tmp_path / "registry")
    try:
        push(registry.host, "poly/base", polyglot(), media_type)
        fresh = Pybuild(tmp_path / "root")
        assert exported_hello(fresh, f"{registry.host}/poly/base:1", tmp_path) == DECLARED
    finally:
        registry.stop()


def zstd_magic() -> bytes:
    """A tar whose first member's name begins with zstd's magic (28 b5 2f fd: a file in directory `(\xb5`)."""
    return tar_of(("(\udcb5/\udcfdname", b"first member\n"), ("hello", DECLARED))


@pytest.mark.slow
@pytest.mark.parametrize("layer", [polyglot, zstd_magic], ids=["gzip-polyglot", "zstd-magic"])
def test_a_loaded_uncompressed_layer_with_gzip_or_zstd_magic_is_read_as_the_tar_it_declares(tmp_path, layer):
    assert layer()[:2] == b"\x1f\x8b" or layer()[:4] == b"\x28\xb5\x2f\xfd"
    oci_layout(tmp_path / "layout", layer(), TAR, "poly/loaded:1")
    fresh = Pybuild(tmp_path / "root")
    fresh("load", "-i", str(tmp_path / "layout"))  # its diff_id check: the blob's own digest, as declared
    files = fresh("layers", "poly/loaded:1").stdout.decode()  # `pybuild layers` reads the stored tar as it is
    assert "added           20B  /hello" in files and "b-only" not in files, files
    assert exported_hello(fresh, "poly/loaded:1", tmp_path) == DECLARED
