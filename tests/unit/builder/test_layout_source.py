"""oci-layout sources given with --build-context: digests and sizes verified, only regular files read, malformed
JSON a clear error (builder/plan/layout.py), and the Dockerfile itself names no host path."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest

import grammar
from builder.errors import PybuildError, UsageError
from builder.plan.bases import SCRATCH, BaseImage, resolve_oci_layout
from builder.plan.contexts import familiar, parse_build_contexts
from builder.plan.imageconfig import ImageConfig
from builder.plan.planner import plan
from builder.plan.steps import FileOp, SourceOp


def _blob(layout, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_layout(layout, env=("A=1",), tag="v1") -> dict:
    """A one-layer image; returns the digests of its parts."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    layer = buf.getvalue()
    layer_desc = dict(_blob(layout, layer), mediaType="application/vnd.oci.image.layer.v1.tar")
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": list(env)},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}})
    config_desc = dict(_blob(layout, config.encode()), mediaType="application/vnd.oci.image.config.v1+json")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config_desc, "layers": [layer_desc]}).encode()
    manifest_desc = dict(_blob(layout, manifest), mediaType="application/vnd.oci.image.manifest.v1+json",
                         annotations={"org.opencontainers.image.ref.name": tag})
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    return {"config": config_desc["digest"], "manifest": manifest_desc["digest"], "layer": layer_desc["digest"]}


def blob_file(layout, digest: str):
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def test_a_layout_resolves_by_tag_and_by_digest(tmp_path):
    parts = make_layout(tmp_path)
    base = resolve_oci_layout(f"oci-layout://{tmp_path}:v1")
    assert dict(base.config.env) == {"A": "1"} and base.source.manifest_digest == parts["manifest"]
    assert resolve_oci_layout(f"oci-layout://{tmp_path}@{parts['manifest']}").source.layers[0].digest == \
        parts["layer"]
    with pytest.raises(PybuildError, match="no image tagged 'v2'"):
        resolve_oci_layout(f"oci-layout://{tmp_path}:v2")


def test_a_tampered_config_changing_env_is_refused(tmp_path):
    parts = make_layout(tmp_path)
    path = blob_file(tmp_path, parts["config"])
    path.write_text(path.read_text().replace('"A=1"', '"A=2"'))  # same size, other bytes
    with pytest.raises(PybuildError, match="does not match its content") as info:
        resolve_oci_layout(f"oci-layout://{tmp_path}:v1")
    assert info.value.reference == "bad-oci-layout"


def test_a_tampered_manifest_or_a_wrong_size_is_refused(tmp_path):
    parts = make_layout(tmp_path)
    path = blob_file(tmp_path, parts["manifest"])
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(PybuildError, match="bytes, its descriptor says"):
        resolve_oci_layout(f"oci-layout://{tmp_path}:v1")


@pytest.mark.parametrize("kind", ["fifo", "symlink-out", "dev-zero", "dir-symlink-out"])
def test_only_regular_files_inside_the_layout_are_read(tmp_path, kind):
    layout = tmp_path / "layout"
    parts = make_layout(layout)
    path = blob_file(layout, parts["config"])
    outside = tmp_path / "outside"
    outside.write_bytes(path.read_bytes())
    if kind == "dir-symlink-out":
        blobs = layout / "blobs" / "sha256"
        os.rename(blobs, tmp_path / "elsewhere")
        blobs.symlink_to(tmp_path / "elsewhere")
    else:
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink-out":
            path.symlink_to(outside)  # same bytes: only the symlink is wrong
        else:
            path.symlink_to("/dev/zero")
    with pytest.raises(PybuildError) as info:
        resolve_oci_layout(f"oci-layout://{layout}:v1")
    assert info.value.reference == "bad-oci-layout", info.value.message


@pytest.mark.parametrize("index", ['{"manifests": [', '[]', '{"manifests": {}}', '{"manifests": [{"digest": 1}]}',
                                   '{"manifests": [{"digest": "sha256:../../etc/passwd", "size": 1}]}'])
def test_a_malformed_index_is_a_clear_error(tmp_path, index):
    make_layout(tmp_path)
    (tmp_path / "index.json").write_text(index)
    with pytest.raises(PybuildError) as info:
        resolve_oci_layout(f"oci-layout://{tmp_path}")
    assert "index.json" in info.value.message


@pytest.mark.parametrize("config", [b"not json", b"[1]", b'{"config": "x", "rootfs": {"diff_ids": []}}',
                                    b'{"config": {"Env": 5}}'])
def test_a_malformed_config_is_a_clear_error(tmp_path, config):
    parts = make_layout(tmp_path)
    manifest = json.loads(blob_file(tmp_path, parts["manifest"]).read_bytes())
    manifest["config"] = dict(_blob(tmp_path, config), mediaType="application/vnd.oci.image.config.v1+json")
    desc = dict(_blob(tmp_path, json.dumps(manifest).encode()), mediaType="application/vnd.oci.image.manifest.v1+json")
    (tmp_path / "index.json").write_text(json.dumps({"manifests": [desc]}))
    with pytest.raises(PybuildError) as info:
        resolve_oci_layout(f"oci-layout://{tmp_path}")
    assert info.value.reference == "bad-oci-layout" and "config" in info.value.message


def planned(text: str, contexts=None, bases=None):
    df = grammar.parse(text, filename="Dockerfile")
    return plan(df, build_args={}, target=None, resolve_image=lambda ref: (bases or {}).get(ref, SCRATCH),
                contexts=parse_build_contexts(contexts or []))


@pytest.mark.parametrize("line", ["FROM oci-layout:///tmp/x", "FROM oci-layout:///tmp/x:tag AS a",
                                  "FROM local:///etc"])
def test_the_dockerfile_cannot_name_a_host_path(line):
    with pytest.raises(PybuildError) as info:
        planned(line + "\n")
    assert info.value.message.startswith("Dockerfile:1:1: ") and "--build-context NAME=" in info.value.hint


@pytest.mark.parametrize("text, col", [("FROM scratch\nCOPY --from=oci-layout:///tmp/x / /\n", 1),
                                       ("FROM scratch\nRUN --mount=from=oci-layout:///tmp/x,target=/x true\n", 5)])
def test_copy_from_and_mount_from_cannot_name_a_host_path(text, col):
    with pytest.raises(PybuildError) as info:
        planned(text)
    assert info.value.message.startswith(f"Dockerfile:2:{col}: ") and info.value.reference == "host-path-refused"


def test_named_contexts_resolve_from_copy_and_mount(tmp_path):
    make_layout(tmp_path / "layout")
    (tmp_path / "dir").mkdir()
    graph = planned("FROM base\nCOPY --from=files a /a\nRUN --mount=from=files,target=/f true\n",
                    contexts=[f"base=oci-layout://{tmp_path / 'layout'}:v1", f"files={tmp_path / 'dir'}"])
    source, files, copy, run = graph.steps
    assert isinstance(source.op, SourceOp) and dict(graph.stages[0].config.env) == {"A": "1"}
    assert isinstance(files.op, FileOp) and files.op.context_dir == str(tmp_path / "dir")
    assert copy.op.from_step == files.id and run.op.mounts[0].from_step == files.id


def test_a_named_context_replaces_a_stage_of_that_name_and_matches_familiar_names():
    img = BaseImage(ImageConfig(env=(("B", "2"),)), SourceOp("x", "sha256:" + "1" * 64, ()))
    graph = planned("FROM scratch AS build\nRUN false\nFROM docker.io/library/alpine:latest\nCOPY --from=build / /\n",
                    contexts=["build=docker-image://me/builder", "alpine=docker-image://me/alpine"],
                    bases={"me/builder": img, "me/alpine": img})
    assert not any(s.kind == "exec" for s in graph.steps)  # the stage's RUN false is gone
    assert familiar("docker.io/library/alpine:latest") == familiar("alpine") == "alpine"
    assert familiar("ghcr.io/me/x:latest") == "ghcr.io/me/x"


@pytest.mark.parametrize("value, words", [("x", "expected NAME=SOURCE"), ("x=https://e.com/a.tgz", "not supported"),
                                          ("x=/no/such/dir", "no such directory")])
def test_bad_build_contexts_are_usage_errors(value, words):
    with pytest.raises(UsageError, match=words):
        parse_build_contexts([value])


@pytest.mark.parametrize("kind", ["symlink", "fifo", "huge"])
def test_index_json_must_be_a_small_regular_file(tmp_path, kind):
    layout = tmp_path / "layout"
    make_layout(layout)
    index = layout / "index.json"
    if kind == "huge":
        index.write_text('{"manifests": []' + " " * (5 << 20) + "}")
    else:
        index.unlink()
        os.mkfifo(index) if kind == "fifo" else index.symlink_to("/etc/passwd")
    with pytest.raises(PybuildError) as info:
        resolve_oci_layout(f"oci-layout://{layout}")
    assert info.value.reference == "bad-oci-layout" and "index.json" in info.value.message


def test_a_descriptor_claiming_a_huge_config_is_refused_before_reading(tmp_path):
    parts = make_layout(tmp_path)
    manifest = json.loads(blob_file(tmp_path, parts["manifest"]).read_bytes())
    manifest["config"]["size"] = 1 << 40
    desc = dict(_blob(tmp_path, json.dumps(manifest).encode()), mediaType="application/vnd.oci.image.manifest.v1+json")
    (tmp_path / "index.json").write_text(json.dumps({"manifests": [desc]}))
    with pytest.raises(PybuildError, match="more than the"):
        resolve_oci_layout(f"oci-layout://{tmp_path}")
