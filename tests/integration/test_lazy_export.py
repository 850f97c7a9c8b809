"""Lazy layer compression seen from the command line: a build writes no layer blob; an export, a push or a
`pybuild layers` makes each blob once, and every way out of the store agrees on the image: the --iidfile is the
exported config's digest, the OCI layout, the docker archive and the registry hold the same manifest, whose layers
unpack to the config's diff_ids. Referees: skopeo and umoci read the layout; the registry is distribution."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import zstandard

from tests.conftest import require_tool
from tests.integration.registry import start_registry
from tests.integration.test_export_docker import digests, members, skopeo_json

pytestmark = pytest.mark.slow


def _context(tmp_path: Path, base: str, tag: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY data /data\nRUN echo {tag} > /srv.txt\n")
    (ctx / "data").write_bytes(hashlib.sha256(tag.encode()).digest() * 40000)
    return ctx


def _blobs(root: Path) -> set[str]:
    return {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir() if not p.name.startswith(".")}


def _layout_image(layout: Path) -> tuple[str, dict, dict]:
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    config = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())
    return entry["digest"], manifest, config


def _tar_of(blob: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip"):
        return gzip.decompress(blob)
    if media_type.endswith("+zstd"):
        return zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True).read()
    return blob


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_export_makes_the_blobs_and_every_output_agrees(pybuild, busybox_image, tmp_path, compression):
    ctx = _context(tmp_path, busybox_image, f"lazy-{compression}")
    before = _blobs(pybuild.root)
    iid = tmp_path / "iid"
    built = pybuild("-t", f"lazy/{compression}", "--compression", compression, "--iidfile", str(iid), str(ctx))
    image_id, _ = digests(built)
    assert iid.read_text() == image_id
    made_by_build = _blobs(pybuild.root) - before  # the config and the manifest, no layer
    layout = tmp_path / "oci"
    exported = pybuild("-t", f"lazy/{compression}", "--compression", compression, "--iidfile", str(iid), "--output",
                       f"type=oci,dest={layout}", str(ctx))
    assert iid.read_text() == image_id  # a fully cached build: the same image
    manifest_digest, manifest, config = _layout_image(layout)
    assert digests(exported) == (image_id, manifest_digest)
    assert manifest["config"]["digest"] == image_id
    own = manifest["layers"][-2:]  # COPY and RUN
    assert all(layer["mediaType"].endswith("+" + compression) for layer in own)
    assert not {layer["digest"] for layer in own} & made_by_build
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
        blob = (layout / "blobs/sha256" / layer["digest"][7:]).read_bytes()
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"] and len(blob) == layer["size"]
        assert "sha256:" + hashlib.sha256(_tar_of(blob, layer["mediaType"])).hexdigest() == diff_id
    assert skopeo_json("inspect", f"oci:{layout}")["Digest"] == manifest_digest
    bundle = tmp_path / "bundle"
    if compression == "zstd":  # umoci 0.4 (Debian 12) reads no zstd layers
        return
    subprocess.run([require_tool("umoci"), "unpack", "--image", f"{layout}:latest", str(bundle)], check=True,
                   capture_output=True, timeout=120)
    assert (bundle / "rootfs/srv.txt").read_text() == f"lazy-{compression}\n"


def test_docker_archive_has_the_manifest_of_the_oci_export(pybuild, busybox_image, tmp_path):
    ctx = _context(tmp_path, busybox_image, "lazy-archive")
    layout = tmp_path / "oci"
    image_id, manifest_digest = digests(pybuild("-t", "lazy/archive", "--output", f"type=oci,dest={layout}",
                                                str(ctx)))
    assert _layout_image(layout)[0] == manifest_digest
    # the docker archive and a second export carry the same manifest: the blobs were made once and kept
    archive = tmp_path / "image.tar"
    again = pybuild("--output", f"type=docker,dest={archive}", str(ctx))
    assert digests(again) == (image_id, manifest_digest)
    assert f"blobs/sha256/{manifest_digest[7:]}" in members(archive)


def test_push_and_later_save_agree_with_the_export(pybuild, busybox_image, tmp_path):
    registry = start_registry(tmp_path / "registry")
    try:
        ctx = _context(tmp_path, busybox_image, "lazy-push")
        image_id, _ = digests(pybuild("-t", "lazy/push", str(ctx)))
        name = f"{registry.host}/lazy/push:1"
        pushed = pybuild("-t", name, "--push", str(ctx))
        assert digests(pushed)[0] == image_id
        manifest_digest = digests(pushed)[1]
        info = skopeo_json("inspect", "--tls-verify=false", f"docker://{name}")
        assert info["Digest"] == manifest_digest
        archive = tmp_path / "saved.tar"
        pybuild("save", "-o", str(archive), "lazy/push")
        index = json.loads(members(archive)["index.json"])
        assert index["manifests"][0]["digest"] == manifest_digest
    finally:
        registry.stop()


def test_layers_reads_a_lazy_layer(pybuild, busybox_image, tmp_path):
    ctx = _context(tmp_path, busybox_image, "lazy-layers")
    pybuild("-t", "lazy/layers", str(ctx))
    out = pybuild("layers", "lazy/layers").stdout.decode()
    assert "srv.txt" in out or "COPY data /data" in out, out
