"""A cache repository shared by images (`type=registry,ref=HOST/REPO`, no tag: an entry per step key, as kaniko's
--cache-repo), and RUN --mount=type=cache contents travelling with `cache-mounts=`; two stores stand for two CI
runners and a real registry (distribution 2.8 on 127.0.0.1) counts the requests in its access log."""
from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import urllib.request
from pathlib import Path

import pytest

from builder.export.registry import Registry
from cache import cachemounts
from tests.integration.conftest import Pybuild
from tests.integration.test_remote_cache import (  # noqa: F401 (fixtures)
    bbctx,
    fresh_runner,
    registry,
    runner_a,
    steps,
)

pytestmark = pytest.mark.slow

COMMON = """\
FROM pybuild/busybox
WORKDIR /work
COPY common.txt ./
RUN sort common.txt > sorted.txt
"""
ONE = COMMON + "COPY one.txt ./\nRUN cat one.txt >> sorted.txt\n"
TWO = COMMON + "COPY two.txt ./\nRUN wc -l sorted.txt > count.txt\n"
MOUNTS = """\
FROM pybuild/busybox
RUN --mount=type=cache,id=deps,target=/deps cat /deps/fetched.txt > /seen.txt 2>&1 || echo none > /seen.txt; \\
    echo fetched-once > /deps/fetched.txt
RUN --mount=type=cache,target=/other echo other > /other/x
"""


def shared_context(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "one.Dockerfile").write_text(ONE)
    (path / "two.Dockerfile").write_text(TWO)
    (path / "common.txt").write_text("b\na\nc\n")
    (path / "one.txt").write_text("image one\n")
    (path / "two.txt").write_text("image two\n")
    return path


def tags(registry, repo: str) -> list[str]:
    with urllib.request.urlopen(f"http://{registry.host}/v2/{repo}/tags/list", timeout=30) as resp:
        return json.loads(resp.read())["tags"]


def entry(registry, repo: str, tag: str) -> tuple[bytes, dict]:
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
    return body, json.loads(body)


def instruction(doc: dict) -> str:
    return json.loads(doc["annotations"]["dev.pybuild.cache.record"])["description"]["instruction"]


def test_two_images_share_a_keyed_cache_repository(runner_a, registry, bbctx, tmp_path):
    ctx = shared_context(tmp_path / "ctx")
    repo = f"{registry.host}/cache/shared"
    runner_a("-t", "me/one", "-f", str(ctx / "one.Dockerfile"), "--cache-to", f"type=registry,ref={repo},mode=max",
             str(ctx))
    written = tags(registry, "cache/shared")
    assert len(written) == 6 and all(re.fullmatch(r"[0-9a-f]{64}", t) for t in written)  # FROM + 5 steps

    b = fresh_runner(tmp_path, "runner-b", registry, bbctx)
    gets = registry.request_count("GET", "/v2/cache/shared/manifests/")
    proc = b("-t", "me/two", "-f", str(ctx / "two.Dockerfile"), "--progress", "plain", "--explain-cache",
             "--cache-from", f"type=registry,ref={repo}", "--cache-to", f"type=registry,ref={repo},mode=max",
             str(ctx))
    states = steps(proc)
    cached = sorted(t for t, s in states.items() if s == "CACHED" and "FROM" not in t)
    done = sorted(t for t, s in states.items() if s == "DONE")
    assert [t.split("] ", 1)[1] for t in cached] == ["WORKDIR /work", "COPY common.txt ./",
                                                     "RUN /bin/sh -c sort common.txt > sorted.txt"], states
    assert [t.split("] ", 1)[1] for t in done] == ["COPY two.txt ./", "RUN /bin/sh -c wc -l sorted.txt > count.txt"], \
        states
    assert f"remote cache type=registry,ref={repo}" in proc.stderr.decode()
    # one GET per step up to the first miss: FROM (its record, A's) + WORKDIR, COPY, RUN (hits) + COPY two.txt
    # (the miss); nothing for the RUN after it
    assert registry.request_count("GET", "/v2/cache/shared/manifests/") - gets == 5
    assert re.search(r"cache:    type=registry,ref=\S+ \(6 entries, 2 new;", proc.stdout.decode()), proc.stdout
    run = b("run", "--rm", "me/two", "cat", "/work/count.txt")
    assert run.stdout.decode().strip() == "3 sorted.txt"

    # a record stored under another step's key is never used, even though it is sound in itself
    forged_tag = next(t for t in tags(registry, "cache/shared")
                      if instruction(entry(registry, "cache/shared", t)[1]).startswith("RUN /bin/sh -c wc"))
    stolen, _ = entry(registry, "cache/shared", next(t for t in written if instruction(
        entry(registry, "cache/shared", t)[1]).startswith("RUN /bin/sh -c cat one.txt")))
    Registry(registry.host).put_manifest("cache/shared", forged_tag, stolen,
                                         "application/vnd.oci.image.manifest.v1+json", scope="")
    c = fresh_runner(tmp_path, "runner-c", registry, bbctx)
    proc = c("-t", "me/two", "-f", str(ctx / "two.Dockerfile"), "--progress", "plain",
             "--cache-from", f"type=registry,ref={repo}", str(ctx))
    assert f"record {('sha256:' + forged_tag)[:19]} ignored: it is stored under that key but is the record of" \
        in proc.stderr.decode(), proc.stderr.decode()
    assert [s for t, s in steps(proc).items() if "RUN /bin/sh -c wc" in t] == ["DONE"]
    assert c("run", "--rm", "me/two", "cat", "/work/count.txt").stdout.decode().strip() == "3 sorted.txt"


def mount_context(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(MOUNTS)
    return path


def seen(runner: Pybuild, image: str) -> str:
    return runner("run", "--rm", image, "cat", "/seen.txt").stdout.decode().strip()


def test_cache_mounts_travel_to_a_fresh_runner(runner_a, registry, bbctx, tmp_path):
    ctx = mount_context(tmp_path / "ctx")
    tagged, keyed = f"{registry.host}/cache/mounts:t", f"{registry.host}/cache/mounts-keyed"
    local = tmp_path / "ci-cache"
    proc = runner_a("-t", "me/mounts", "--cache-to", f"type=registry,ref={tagged},mode=max,cache-mounts=deps",
                    "--cache-to", f"type=registry,ref={keyed},cache-mounts=all",
                    "--cache-to", f"type=local,dest={local},cache-mounts=deps", str(ctx))
    assert seen(runner_a, "me/mounts") == "none"
    doc = json.loads(urllib.request.urlopen(f"http://{registry.host}/v2/cache/mounts/blobs/" + entry(
        registry, "cache/mounts", "t")[1]["config"]["digest"], timeout=30).read())
    assert [m["id"] for m in doc["mounts"]] == ["deps"]  # opt-in per id: /other stayed home

    for name, spec in (("runner-b", f"type=registry,ref={tagged}"), ("runner-c", f"type=registry,ref={keyed}"),
                       ("runner-d", f"type=local,src={local}")):
        b = fresh_runner(tmp_path, name, registry, bbctx)
        proc = b("-t", "me/mounts", "--no-cache", "--progress", "plain", "--cache-from", spec, str(ctx))
        assert seen(b, "me/mounts") == "fetched-once", proc.stderr.decode()  # the first RUN saw A's content
    # a runner whose steps all hit runs no RUN, so its store has no mount: its export keeps the content it imported
    e = fresh_runner(tmp_path, "runner-e", registry, bbctx)
    proc = e("-t", "me/mounts", "--progress", "plain", "--cache-from", f"type=registry,ref={tagged}",
             "--cache-to", f"type=registry,ref={tagged}2,mode=max,cache-mounts=deps", str(ctx))
    assert set(steps(proc).values()) == {"CACHED"} and cachemounts.listing(e.root) == []
    again = json.loads(urllib.request.urlopen(f"http://{registry.host}/v2/cache/mounts/blobs/" + entry(
        registry, "cache/mounts", "t2")[1]["config"]["digest"], timeout=30).read())
    assert again["mounts"] == doc["mounts"] and again["records"] == doc["records"]
    _, other = entry(registry, "cache/mounts-keyed", "mount-" + __import__("hashlib").sha256(b"/other").hexdigest())
    assert other["annotations"]["dev.pybuild.cache.mount"] == "/other"  # cache-mounts=all


def evil_layer(outside: Path) -> tuple[bytes, str, str]:
    """A gzip tar whose second entry writes through the symlink its first one made: (blob, digest, diff_id)."""
    import hashlib

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, str(outside)
        tar.addfile(link)
        data = b"written outside\n"
        pwned = tarfile.TarInfo("escape/pwned")
        pwned.size = len(data)
        tar.addfile(pwned, io.BytesIO(data))
    blob = gzip.compress(raw.getvalue(), mtime=0)
    return blob, "sha256:" + hashlib.sha256(blob).hexdigest(), "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()


def test_a_hostile_cache_mount_layer_is_refused(runner_a, registry, bbctx, tmp_path):
    import hashlib

    ctx = mount_context(tmp_path / "ctx")
    ref = f"{registry.host}/cache/mounts:evil-base"
    runner_a("-t", "me/mounts", "--cache-to", f"type=registry,ref={ref},cache-mounts=deps", str(ctx))
    outside = tmp_path / "outside"
    outside.mkdir()
    blob, digest, diff_id = evil_layer(outside)
    client = Registry(registry.host)
    (tmp_path / "evil.tgz").write_bytes(blob)
    client.upload_blob("cache/mounts", digest, tmp_path / "evil.tgz", scope="")
    _, manifest = entry(registry, "cache/mounts", "evil-base")
    config = json.loads(urllib.request.urlopen(f"http://{registry.host}/v2/cache/mounts/blobs/"
                                               + manifest["config"]["digest"], timeout=30).read())
    layers = manifest["layers"] + [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                                    "size": len(blob), "annotations": {"containerd.io/uncompressed": diff_id}}]
    config["mounts"] = [{"id": "deps", "layer": len(layers) - 1}]
    body = json.dumps(config).encode()
    (tmp_path / "config.json").write_bytes(body)
    config_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    client.upload_blob("cache/mounts", config_digest, tmp_path / "config.json", scope="")
    manifest = dict(manifest, layers=layers, config=dict(manifest["config"], digest=config_digest, size=len(body)))
    client.put_manifest("cache/mounts", "evil", json.dumps(manifest).encode(), manifest["mediaType"], scope="")

    d = fresh_runner(tmp_path, "runner-d", registry, bbctx)
    proc = d("-t", "me/mounts", "--no-cache", "--progress", "plain", "--cache-from",
             f"type=registry,ref={registry.host}/cache/mounts:evil", str(ctx))
    err = proc.stderr.decode()
    assert "cache mount 'deps' cannot be restored, the RUN starts with an empty mount" in err, err
    assert "symlink" in err
    assert list(outside.iterdir()) == []  # nothing written through the link
    assert seen(d, "me/mounts") == "none"
    assert not list((d.root / "cachemounts").glob(".new-*"))
