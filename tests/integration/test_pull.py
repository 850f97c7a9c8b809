"""FROM an image in a registry: pulled into the store once (OCI or docker schema2 manifests, indexes and manifest
lists resolved to linux/<host arch>, by tag or digest), recorded so later builds stay offline, `--pull` to refresh.

The images are built by pybuild and pushed to a real docker-registry; skopeo converts one to docker schema2 and
the tests PUT an OCI index and a docker manifest list by hand. Every pulled build runs with `pybuild run`.
"""
from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import urllib.request

import pytest

from tests.conftest import require_tool
from tests.integration.conftest import TESTDATA, Pybuild
from tests.integration.registry import free_port, start_registry

pytestmark = pytest.mark.slow

APP = ("-f", str(TESTDATA / "app" / "Dockerfile"), str(TESTDATA / "app"))
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
OTHER_ARCH = "s390x" if ARCH != "s390x" else "amd64"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def pushed_app(pybuild, app_image, registry) -> tuple[str, str]:
    """(name, manifest digest) of the demo app pushed to the test registry."""
    name = f"{registry.host}/me/app:v1"
    out = pybuild("-t", name, "--push", *APP).stdout.decode()
    return name, re.search(r"manifest: (sha256:[0-9a-f]{64})", out).group(1)


@pytest.fixture
def fresh(tmp_path) -> Pybuild:
    """pybuild on an empty store: nothing of the session's images is there."""
    return Pybuild(tmp_path / "fresh-root")


def derived(fresh: Pybuild, tmp_path, base: str, *extra: str) -> subprocess.CompletedProcess:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(f"FROM {base}\nUSER root\nRUN echo derived > /derived.txt\n")
    return fresh("-t", "me/derived", "--progress", "plain", *extra, str(ctx))


def put_manifest(host: str, repo: str, ref: str, doc: dict, media_type: str) -> str:
    body = json.dumps(doc).encode()
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{ref}", data=body, method="PUT",
                                 headers={"Content-Type": media_type})
    with urllib.request.urlopen(req, timeout=30):
        pass
    return "sha256:" + hashlib.sha256(body).hexdigest()


def own_manifest(host: str, repo: str, ref: str) -> bytes:
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def test_from_registry_on_a_fresh_store_then_offline(pybuild, pushed_app, fresh, tmp_path):
    name, _ = pushed_app
    own = start_registry(tmp_path / "own")  # its own registry, stopped before the second build
    try:
        copy = f"{own.host}/me/app:v1"
        pybuild("--output", f"type=registry,name={copy}", *APP)
        first = derived(fresh, tmp_path, copy)
        layers = json.loads(own_manifest(own.host, "me/app", "v1"))["layers"]
    finally:
        own.stop()
    done = re.findall(rf"^#pull {re.escape(copy)} (sha256:[0-9a-f]{{12}}) (\S+) / (\S+)(?: [0-9.]+s)? done$",
                      first.stderr.decode(), re.M)  # each layer's bytes, then "done", before the first step
    assert sorted(d for d, _, _ in done) == sorted(l["digest"][:19] for l in layers)
    assert all(current == total for _, current, total in done)
    assert first.stderr.decode().index("#pull") < first.stderr.decode().index("#1 ")
    meta = re.search(rf"^#(meta-\d+) \[internal\] load metadata for {re.escape(copy)}$", first.stderr.decode(), re.M)
    assert meta, first.stderr.decode()  # issue 25: the resolve is BuildKit's task, the layers' bytes inside it
    log = first.stderr.decode()
    assert log.index(meta.group(0)) < log.index("#pull") < log.index(f"#{meta.group(1)} DONE ") < log.index("#1 ")
    assert "hello from pybuild, world!" in fresh("run", "--rm", "me/derived").stdout.decode()
    assert fresh("run", "--rm", "me/derived", "cat", "/derived.txt", "/srv/app/built.txt").stdout.decode() == \
        "derived\nbuilt by pybuild\n"
    assert "RUN /bin/sh -c id -un" in fresh("history", copy).stdout.decode()  # recorded under its name
    second = derived(fresh, tmp_path, copy)  # the registry is gone: the store answers
    assert re.findall(r"image id: \S+", second.stdout.decode()) == re.findall(r"image id: \S+",
                                                                                 first.stdout.decode())


def test_from_by_digest(pushed_app, registry, fresh, tmp_path):
    name, digest = pushed_app
    derived(fresh, tmp_path, f"{registry.host}/me/app@{digest}")
    assert fresh("run", "--rm", "me/derived", "cat", "/srv/app/built.txt").stdout.decode() == "built by pybuild\n"


def test_docker_schema2_manifest_and_manifest_list(pushed_app, registry, fresh, tmp_path):
    name, _ = pushed_app
    v2s2 = f"{registry.host}/me/app-v2s2:1"
    subprocess.run([require_tool("skopeo"), "copy", "--format", "v2s2", "--src-tls-verify=false",
                    "--dest-tls-verify=false", f"docker://{name}", f"docker://{v2s2}"], check=True,
                   capture_output=True, timeout=120)
    raw = subprocess.run([require_tool("skopeo"), "inspect", "--raw", "--tls-verify=false", f"docker://{v2s2}"],
                         check=True, capture_output=True).stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    v2s2_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    derived(fresh, tmp_path, v2s2)
    assert fresh("run", "--rm", "me/derived", "cat", "/srv/app/built.txt").stdout.decode() == "built by pybuild\n"
    listed = put_manifest(registry.host, "me/app-v2s2", "list", {
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": v2s2_digest,
                       "size": len(raw), "platform": {"architecture": ARCH, "os": "linux"}}]},
        "application/vnd.docker.distribution.manifest.list.v2+json")
    derived(fresh, tmp_path, f"{registry.host}/me/app-v2s2@{listed}")
    assert "hello from pybuild, world!" in fresh("run", "--rm", "me/derived").stdout.decode()


def test_oci_index_picks_the_host_platform(pybuild, busybox_image, pushed_app, registry, fresh, tmp_path):
    name, app_digest = pushed_app
    other = f"{registry.host}/me/app:other"  # another image in the same repository, listed for another arch
    ctx = tmp_path / "other"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo wrong platform > /srv.txt\n")
    other_digest = re.search(r"manifest: (\S+)", pybuild("-t", other, "--push", str(ctx)).stdout.decode()).group(1)
    sizes = {}
    for digest in (app_digest, other_digest):
        with urllib.request.urlopen(urllib.request.Request(
                f"http://{registry.host}/v2/me/app/manifests/{digest}",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}), timeout=30) as resp:
            sizes[digest] = len(resp.read())
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other_digest,
         "size": sizes[other_digest], "platform": {"architecture": OTHER_ARCH, "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": app_digest,
         "size": sizes[app_digest], "platform": {"architecture": ARCH, "os": "linux"}}]}
    put_manifest(registry.host, "me/app", "multi", index, "application/vnd.oci.image.index.v1+json")
    derived(fresh, tmp_path, f"{registry.host}/me/app:multi")
    assert fresh("run", "--rm", "me/derived", "cat", "/srv/app/built.txt").stdout.decode() == "built by pybuild\n"


def test_pull_flag_refreshes_a_moved_tag(pybuild, busybox_image, registry, fresh, tmp_path):
    moving = f"{registry.host}/me/moving:1"
    for text in ("one", "two"):
        ctx = tmp_path / text
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(f"FROM pybuild/busybox\nRUN echo {text} > /version\n")
        pybuild("-t", moving, "--push", str(ctx))
        if text == "one":
            derived(fresh, tmp_path, moving)
            assert fresh("run", "--rm", "me/derived", "cat", "/version").stdout.decode() == "one\n"
    derived(fresh, tmp_path, moving)  # the store's copy wins without --pull
    assert fresh("run", "--rm", "me/derived", "cat", "/version").stdout.decode() == "one\n"
    derived(fresh, tmp_path, moving, "--pull")
    assert fresh("run", "--rm", "me/derived", "cat", "/version").stdout.decode() == "two\n"


def test_registry_down_names_the_reference(fresh, tmp_path):
    ref = f"127.0.0.1:{free_port()}/me/gone:1"
    proc = derived_fails(fresh, tmp_path, ref)
    err = proc.stderr.decode()
    assert ref in err and f"cannot reach registry {ref.split('/')[0]}" in err and "refused" in err, err


def test_unknown_tag_shows_the_registry_error(registry, fresh, tmp_path):
    err = derived_fails(fresh, tmp_path, f"{registry.host}/me/app:no-such-tag").stderr.decode()
    assert "MANIFEST_UNKNOWN" in err and "me/app:no-such-tag" in err, err


def derived_fails(fresh: Pybuild, tmp_path, base: str) -> subprocess.CompletedProcess:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN true\n")
    proc = fresh(str(ctx), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert len(err.splitlines()) <= 8, err
    return proc
