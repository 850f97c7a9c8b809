"""Hostile archives, base images and stores, end to end through the `pybuild` command: an ADD'ed tar and a pulled
base layer cannot reach the host, the store root is private, and a tampered blob is never exported."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from tests.integration.conftest import Pybuild
from tests.integration.registry import push_raw, start_registry

T = 1_500_000_000


def entry(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", uid=0, gid=0, mtime=T):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid, info.mtime = kind, mode, link, uid, gid, mtime
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def tar_bytes(*entries) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return raw.getvalue()


def failed(proc) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def victim(tmp_path) -> Path:
    d = tmp_path / "host-dir"
    d.mkdir(mode=0o750)
    (d / "secret").write_text("s")
    os.chmod(d / "secret", 0o600)
    return d


@pytest.mark.slow
def test_add_of_a_hostile_tar_leaves_the_host_alone_and_keeps_the_archive_owners(pybuild, busybox_image, tmp_path,
                                                                                 victim):
    """The review's case: `l -> <host dir>` then `l/` with mode 7777 changed the host directory's mode."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(gzip.compress(tar_bytes(
        entry("l", tarfile.SYMTYPE, link=str(victim)), entry("l/", tarfile.DIRTYPE, mode=0o7777),
        entry("l/secret", data=b"pwned", mode=0o7777),
        entry("d/", tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1001, mtime=T - 60),
        entry("d/f", data=b"f", uid=1000, gid=1001, mtime=T - 30))))
    (ctx / "notes.txt.gz").write_bytes(gzip.compress(b"just notes\n"))
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nADD evil.tar /x/\nADD notes.txt.gz /n/\n")
    before = [(os.stat(victim).st_mode, (victim / "secret").read_text(), os.stat(victim / "secret").st_mode)]
    pybuild("-t", "hostile/add", str(ctx))
    assert [(os.stat(victim).st_mode, (victim / "secret").read_text(), os.stat(victim / "secret").st_mode)] == before
    out = pybuild("run", "--rm", "hostile/add", "stat", "-c", "%u:%g %a %Y %n", "/x/d", "/x/d/f",
                  "/x/l/secret").stdout.decode().split("\n")
    assert out[:2] == [f"1000:1001 750 {T - 60} /x/d", f"1000:1001 644 {T - 30} /x/d/f"], out
    notes = pybuild("run", "--rm", "hostile/add", "cat", "/n/notes.txt.gz").stdout
    assert gzip.decompress(notes) == b"just notes\n"


def _push_raw(host: str, repo: str, layer: bytes) -> str:
    """Upload a crafted one-layer image straight to the registry (pybuild would never write such a layer)."""
    blob = gzip.compress(layer, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    descs = [{"mediaType": media, "digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}
             for data, media in ((blob, "application/vnd.oci.image.layer.v1.tar+gzip"),
                                 (config, "application/vnd.oci.image.config.v1+json"))]
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": descs[1], "layers": [descs[0]]}).encode()
    push_raw(host, repo, [blob, config], manifest)
    return descs[0]["digest"]


@pytest.mark.slow
@pytest.mark.parametrize("layer, words", [
    (tar_bytes(entry("etc/"), entry("etc/.wh..."), entry("keep", data=b"k")), "not a valid whiteout"),
    (tar_bytes(entry("l", tarfile.SYMTYPE, link="/"), entry("l/tmp/pwned", data=b"x")), "through a symlink"),
], ids=["whiteout-dotdot", "through-symlink"])
def test_a_hostile_base_layer_is_refused_naming_it(tmp_path, layer, words):
    registry = start_registry(tmp_path / "registry")
    try:
        digest = _push_raw(registry.host, "evil/base", layer)
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM {registry.host}/evil/base:1\n")
        fresh = Pybuild(tmp_path / "root")
        err = failed(fresh(str(ctx), check=False))
        assert digest in err and words in err, err
        assert sorted(os.listdir(tmp_path / "root" / "tmp")) == [] and (tmp_path / "root").is_dir()
    finally:
        registry.stop()


def test_the_store_root_is_private(pybuild, busybox_image, session_root):
    assert stat.S_IMODE(os.stat(session_root).st_mode) == 0o700


@pytest.mark.slow
def test_a_tampered_blob_is_never_exported(tmp_path, busybox_image, pybuild):
    """Its own store: the tampered blob is removed from it, which the session's images must not suffer."""
    from tests.integration.conftest import busybox_context

    fresh = Pybuild(tmp_path / "root")
    ctx = busybox_context(tmp_path / "ctx")
    fresh("-t", "t/busybox", "--output", f"type=oci,dest={tmp_path / 'first'}", str(ctx))  # makes the gzip blob
    (blob,) = [p for p in (tmp_path / "root/blobs/sha256").iterdir() if p.stat().st_size > 100_000]
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(50_000)
        f.write(b"tampered")
    err = failed(fresh("-t", "t/busybox", "--output", f"type=oci,dest={tmp_path / 'layout'}", str(ctx), check=False))
    assert f"corrupt blob sha256:{blob.name}" in err and "build again" in err, err
    assert not (tmp_path / "layout/blobs/sha256" / blob.name).exists()
    fresh("-t", "t/busybox", "--output", f"type=oci,dest={tmp_path / 'layout'}", str(ctx))  # as the hint says
    exported = list((tmp_path / "layout/blobs/sha256").iterdir())
    assert len(exported) >= 3 and all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in exported)
