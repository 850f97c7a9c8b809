"""Pulling into a real (temporary) store from an in-process registry that serves a dict of manifests and blobs:
platform choice, digest and size checks while streaming (a bad blob leaves nothing), schema1 refused."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import json
import tarfile
import threading
import time

import pytest

from builder.export.pull import DOWNLOADS, VerifiedStream, choose_platform, host_platform, pull_image
from builder.export.registry import Registries, RegistryError
from cache import Store
from tests.httpserve import Handler, serving


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(name: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


class Served(Handler):
    manifests: dict[str, tuple[bytes, str]] = {}  # tag or digest → (body, media type)
    blobs: dict[str, bytes] = {}
    requests: list[str] = []
    blob_delay = 0.0  # seconds each blob response waits before its body, to let downloads overlap
    in_flight = 0  # blob responses being served now
    most_in_flight = 0
    lock = threading.Lock()

    def do_GET(self):
        Served.requests.append(self.path)
        parts = self.path.split("/")  # /v2/me/app/manifests/<ref> or /v2/me/app/blobs/<digest>
        if parts[-2] == "manifests" and parts[-1] in self.manifests:
            body, media_type = self.manifests[parts[-1]]
            return self.reply(200, body, {"Content-Type": media_type, "Docker-Content-Digest": digest(body)})
        if parts[-2] == "blobs" and parts[-1] in self.blobs:
            with Served.lock:
                Served.in_flight += 1
                Served.most_in_flight = max(Served.most_in_flight, Served.in_flight)
            try:
                time.sleep(self.blob_delay)
                return self.reply(200, self.blobs[parts[-1]], {"Content-Type": "application/octet-stream"})
            finally:
                with Served.lock:
                    Served.in_flight -= 1
        self.reply(404, json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode())

    def layer_requested(self) -> bytes | None:
        """The gzip layer blob this GET asks for; None for a manifest, a config or an unknown blob."""
        parts = self.path.split("/")
        body = self.blobs.get(parts[-1]) if parts[-2] == "blobs" else None
        return body if body is not None and body.startswith(b"\x1f\x8b") else None


@pytest.fixture
def served():
    Served.manifests, Served.blobs, Served.requests = {}, {}, []
    Served.blob_delay, Served.in_flight, Served.most_in_flight = 0.0, 0, 0
    with serving(Served) as host:
        yield host


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


def publish(tag: str, files: dict[str, bytes], media_types=("application/vnd.oci.image.manifest.v1+json",
                                                            "application/vnd.oci.image.layer.v1.tar+gzip")):
    tars = [layer_tar(name, content) for name, content in files.items()]
    blobs = [gzip.compress(t, mtime=0) for t in tars]
    config = json.dumps({"architecture": host_platform()[1], "os": "linux", "config": {"Env": ["A=1"]},
                         "rootfs": {"type": "layers", "diff_ids": [digest(t) for t in tars]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": media_types[0],
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest(config), "size": len(config)},
                           "layers": [{"mediaType": media_types[1], "digest": digest(b), "size": len(b)}
                                      for b in blobs]}).encode()
    Served.blobs.update({digest(b): b for b in [*blobs, config]})
    Served.manifests[tag] = Served.manifests[digest(manifest)] = (manifest, media_types[0])
    return manifest, blobs


def test_pull_records_and_tags(served, store):
    manifest, blobs = publish("v1", {"a.txt": b"a", "b.txt": b"b"})
    record = pull_image(store, f"{served}/me/app:v1", Registries())
    assert record.manifest.digest == digest(manifest)
    assert [l.blob.digest for l in record.layers] == [digest(b) for b in blobs]
    assert store.resolve(f"{served}/me/app:v1").manifest.digest == digest(manifest)
    before = len(Served.requests)
    pull_image(store, f"{served}/me/app@{digest(manifest)}", Registries())  # blobs present: manifest + config only
    assert [p.split("/")[-2] for p in Served.requests[before:]] == ["manifests", "blobs"]
    assert store.resolve(f"{served}/me/app@{digest(manifest)}") is not None


def test_docker_manifest_list_picks_the_host(served, store):
    manifest, _ = publish("amd", {"x": b"x"}, ("application/vnd.docker.distribution.manifest.v2+json",
                                               "application/vnd.docker.image.rootfs.diff.tar.gzip"))
    os_name, arch, _ = host_platform()
    listing = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                          "manifests": [
                              {"digest": "sha256:" + "1" * 64, "size": 1, "platform": {"os": "windows",
                                                                                        "architecture": arch}},
                              {"digest": digest(manifest), "size": len(manifest),
                               "platform": {"os": os_name, "architecture": arch}}]}).encode()
    Served.manifests["multi"] = (listing, "application/vnd.docker.distribution.manifest.list.v2+json")
    record = pull_image(store, f"{served}/me/app:multi", Registries())
    assert record.manifest.digest == digest(manifest)
    assert record.layers[0].blob.media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"


def test_choose_platform():
    arm6, arm7, amd, att = ("sha256:" + c * 64 for c in "0123")
    index = {"manifests": [
        {"digest": arm6, "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
        {"digest": arm7, "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": amd, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": att, "size": 1, "platform": {"os": "unknown", "architecture": "unknown"}}]}
    assert choose_platform(index, ("linux", "arm", "v7"))["digest"] == arm7
    assert choose_platform(index, ("linux", "amd64", None))["digest"] == amd
    with pytest.raises(RegistryError) as err:
        choose_platform(index, ("linux", "riscv64", None))
    assert "linux/amd64" in err.value.message and "linux/arm/v7" in err.value.message


@pytest.mark.parametrize("damage", ["content", "short", "long"])
def test_a_bad_blob_leaves_nothing(served, store, damage):
    _, blobs = publish("v1", {"a.txt": b"a" * 1000})
    bad = {"content": blobs[0][:-1] + bytes([blobs[0][-1] ^ 1]), "short": blobs[0][:-5],
           "long": blobs[0] + b"extra"}[damage]
    Served.blobs[digest(blobs[0])] = bad
    with pytest.raises(RegistryError) as err:
        pull_image(store, f"{served}/me/app:v1", Registries())
    assert digest(blobs[0]) in err.value.message
    assert not store.has_blob(digest(blobs[0])) and not store.has_blob(digest(bad))
    assert store.resolve(f"{served}/me/app:v1") is None
    assert [p.name for p in (store.root / "blobs" / "sha256").iterdir()] == []


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_layers_download_side_by_side_with_progress(served, store):
    """As containerd and dockerd (max-concurrent-downloads 3): up to DOWNLOADS layers at once, each reported."""
    files = {f"f{i}": os.urandom(300_000 + i) for i in range(5)}
    _, blobs = publish("v1", files)
    Served.blob_delay = 0.3
    seen = []
    record = pull_image(store, f"{served}/me/app:v1", Registries(), progress=lambda *a: seen.append(a))
    assert [l.blob.digest for l in record.layers] == [digest(b) for b in blobs]
    assert 2 <= Served.most_in_flight <= DOWNLOADS == 3
    for b in blobs:
        mine = [(current, total) for layer, current, total in seen if layer == digest(b)]
        assert mine[0] == (0, len(b)) and mine[-1] == (len(b), len(b))
        assert [c for c, _ in mine] == sorted(c for c, _ in mine)


def test_a_bad_layer_among_several_stops_the_pull(served, store):
    _, blobs = publish("v1", {f"f{i}": os.urandom(200_000) for i in range(4)})
    Served.blobs[digest(blobs[1])] = blobs[1][:-1] + bytes([blobs[1][-1] ^ 1])
    with pytest.raises(RegistryError) as err:
        pull_image(store, f"{served}/me/app:v1", Registries())
    assert err.value.message == f"blob {digest(blobs[1])}: content has digest {digest(Served.blobs[digest(blobs[1])])}"
    assert store.resolve(f"{served}/me/app:v1") is None and not store.has_blob(digest(blobs[1]))
    assert [p.name for p in (store.root / "blobs" / "sha256").iterdir() if p.name.startswith(".tmp-")] == []
    assert not [t for t in threading.enumerate() if t.name.startswith("pybuild-pull")]


def test_manifest_digest_is_checked_and_schema1_refused(served, store):
    manifest, _ = publish("v1", {"a": b"a"})
    Served.manifests[digest(b"other")] = Served.manifests["v1"]
    with pytest.raises(RegistryError, match="content has digest"):
        pull_image(store, f"{served}/me/app@{digest(b'other')}", Registries())
    Served.manifests["old"] = (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(),
                               "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(RegistryError, match="schema1"):
        pull_image(store, f"{served}/me/app:old", Registries())


def test_verified_stream_reads_in_chunks():
    data = b"x" * 3000
    stream = VerifiedStream(io.BytesIO(data), digest(data), len(data))
    assert stream.read(1000) + stream.read() == data


def test_resolve_base_uses_the_store_first_and_fetch_on_a_miss_or_pull(served, store):
    from builder.errors import ImageNotFoundError
    from builder.plan.bases import resolve_base

    name = f"{served}/me/app:v1"
    publish("v1", {"a": b"a"})
    calls = []

    def fetch(ref):
        calls.append(ref)
        pull_image(store, ref, Registries())

    first = resolve_base(store, name, fetch=fetch)
    assert calls == [name] and first.config.env_dict() == {"A": "1"}
    assert resolve_base(store, name, fetch=fetch).source == first.source and calls == [name]  # local now
    resolve_base(store, name, pull=True, fetch=fetch)
    assert calls == [name, name]

    def down(ref):
        raise RegistryError("cannot reach registry r.example (https://r.example): refused", hint="is it up?")

    with pytest.raises(ImageNotFoundError) as err:
        resolve_base(store, "r.example/x:1", fetch=down)
    assert err.value.message == (f"base image 'r.example/x:1' is not in the local store ({store.root}) and pulling "
                                 "it failed: cannot reach registry r.example (https://r.example): refused")
    assert err.value.hint == "is it up?"
