"""--cache-to / --cache-from: two stores stand for two CI runners sharing a cache through a real registry
(distribution 2.8 on 127.0.0.1), an OCI layout directory, or the pushed image itself (inline).

Runner A builds and exports; runner B starts empty, builds the busybox base from A's cache, then the same images:
every step must be CACHED and the image digests equal. Uploads and downloads are counted in the registry's access
log."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from builder.export.registry import Registry
from tests.integration.conftest import TESTDATA, Pybuild, busybox_context
from tests.integration.registry import start_registry

pytestmark = pytest.mark.slow

APP = ("-f", str(TESTDATA / "app" / "Dockerfile"), str(TESTDATA / "app"))
TWO_STAGES = """\
FROM pybuild/busybox AS builder
WORKDIR /src
COPY main.txt ./
RUN tr a-z A-Z < main.txt > out.txt
COPY other.txt ./
RUN cat other.txt >> out.txt
FROM pybuild/busybox
COPY --from=builder /src/out.txt /app/out.txt
RUN wc -c /app/out.txt > /app/size.txt
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def bbctx(tmp_path_factory) -> Path:
    return busybox_context(tmp_path_factory.mktemp("bbctx"))


@pytest.fixture(scope="module")
def runner_a(tmp_path_factory, registry, bbctx) -> Pybuild:
    """Runner A: builds busybox and exports its cache (every later runner builds its base from it)."""
    a = Pybuild(tmp_path_factory.mktemp("runner-a"))
    a("-t", "pybuild/busybox", "--cache-to", f"type=registry,ref={registry.host}/cache/busybox:c,mode=max",
      str(bbctx))
    return a


def fresh_runner(tmp_path: Path, name: str, registry, bbctx) -> Pybuild:
    """An empty store that builds the busybox base from A's cache (every step a remote hit, the same image)."""
    runner = Pybuild(tmp_path / name)
    proc = runner("-t", "pybuild/busybox", "--progress", "plain", "--cache-from",
                  f"type=registry,ref={registry.host}/cache/busybox:c", str(bbctx))
    assert "DONE" not in proc.stderr.decode(), proc.stderr.decode()
    return runner


def two_stage_context(path: Path, other: str = "second part\n") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(TWO_STAGES)
    (path / "main.txt").write_text("first part\n")
    (path / "other.txt").write_text(other)
    return path


def steps(proc) -> dict[str, str]:
    """Step title → CACHED / DONE from plain progress."""
    text = proc.stderr.decode()
    titles = dict(re.findall(r"^#(\d+) (\[.*)$", text, re.M))
    states = dict(re.findall(r"^#(\d+) (CACHED|DONE)", text, re.M))
    return {titles[n]: states.get(n, "?") for n in titles}


def digest_of(proc) -> str:
    """The image id: the same image whether its layers were committed lazily (A: the stored manifest lists them
    uncompressed until an export) or came compressed from a cache (B)."""
    match = re.search(r"image id: (sha256:[0-9a-f]{64})", proc.stdout.decode())
    assert match, proc.stdout.decode() + proc.stderr.decode()
    return match.group(1)


def manifest(registry, repo: str, ref: str) -> dict:
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def blob(registry, repo: str, digest: str) -> bytes:
    with urllib.request.urlopen(f"http://{registry.host}/v2/{repo}/blobs/{digest}", timeout=30) as resp:
        return resp.read()


def blob_gets(registry, digests) -> int:
    return sum(registry.request_count("GET", f"/blobs/{d}") for d in digests)


def test_two_runners_share_a_registry_cache_mode_max(runner_a, registry, bbctx, tmp_path):
    ctx = two_stage_context(tmp_path / "two")
    ref_app, ref_two = f"{registry.host}/cache/app:max", f"{registry.host}/cache/two:max"
    app_a = digest_of(runner_a("-t", "me/app", "--cache-to", f"type=registry,ref={ref_app},mode=max", *APP))
    two_a = digest_of(runner_a("-t", "me/two", "--cache-to", f"type=registry,ref={ref_two},mode=max", str(ctx)))

    b = fresh_runner(tmp_path, "runner-b", registry, bbctx)
    proc = b("-t", "me/app", "--progress", "plain", "--explain-cache", "--cache-from",
             f"type=registry,ref={ref_app}", *APP)
    assert set(steps(proc).values()) == {"CACHED"}, steps(proc)
    assert digest_of(proc) == app_a
    hits = re.findall(r"^#\d+ cache hit: sha256:[0-9a-f]{12} \((.*)\)$", proc.stderr.decode(), re.M)
    assert hits and set(hits) == {f"remote cache type=registry,ref={ref_app}"}, proc.stderr.decode()
    again = b("-t", "me/app", "--progress", "plain", "--explain-cache", *APP)  # now B's own cache has them
    assert set(re.findall(r"cache hit: \S+ \((.*)\)", again.stderr.decode())) == {"local cache"}
    assert digest_of(again) == app_a
    proc = b("-t", "me/two", "--progress", "plain", "--cache-from", f"type=registry,ref={ref_two}", str(ctx))
    assert set(steps(proc).values()) == {"CACHED"}, steps(proc)
    assert digest_of(proc) == two_a
    assert (b.root / "blobs").is_dir()

    # one source file changes: B rebuilds from its COPY on, and its --cache-to uploads only the new layers
    before = {d["digest"] for d in manifest(registry, "cache/two", "max")["layers"]}
    (ctx / "other.txt").write_text("a changed second part, longer\n")
    uploads = registry.request_count("PUT", "/blobs/uploads/")
    proc = b("-t", "me/two", "--progress", "plain", "--cache-from", f"type=registry,ref={ref_two}",
             "--cache-to", f"type=registry,ref={ref_two},mode=max", str(ctx))
    states = steps(proc)
    rebuilt = [t for t, s in states.items() if s == "DONE"]
    assert rebuilt and all(("other.txt" in t or "out.txt" in t) for t in rebuilt), states
    assert any("COPY other.txt" in t for t in rebuilt) and all(s == "CACHED" for t, s in states.items()
                                                              if "main.txt" in t or "WORKDIR" in t), states
    after = manifest(registry, "cache/two", "max")
    new_layers = {d["digest"] for d in after["layers"]} - before
    assert len(new_layers) == 4  # COPY other.txt, RUN cat, COPY --from, RUN wc
    assert registry.request_count("PUT", "/blobs/uploads/") - uploads == len(new_layers) + 1  # + the config

    # the same build again: the cache is unchanged, so --cache-to sends nothing at all
    puts = registry.request_count("PUT", "/v2/")
    proc = b("-t", "me/two", "--cache-from", f"type=registry,ref={ref_two}",
             "--cache-to", f"type=registry,ref={ref_two},mode=max", str(ctx))
    assert "unchanged" in proc.stdout.decode()
    assert registry.request_count("PUT", "/v2/") == puts


def test_mode_min_caches_only_the_final_stage(runner_a, registry, bbctx, tmp_path):
    ctx = two_stage_context(tmp_path / "two", other="min mode\n")
    ref = f"{registry.host}/cache/two:min"
    two_a = digest_of(runner_a("-t", "me/two-min", "--cache-to", f"type=registry,ref={ref}", str(ctx)))
    b = fresh_runner(tmp_path, "runner-b", registry, bbctx)
    proc = b("-t", "me/two-min", "--progress", "plain", "--cache-from", ref, str(ctx))
    states = steps(proc)
    builder = {t: s for t, s in states.items() if t.startswith("[builder")}
    final = {t: s for t, s in states.items() if not t.startswith("[builder")}
    assert set(final.values()) == {"CACHED"}, states
    assert {s for t, s in builder.items() if "RUN" in t or "COPY" in t} == {"DONE"}, states
    assert digest_of(proc) == two_a


def test_push_after_full_remote_hit_downloads_no_layer(runner_a, registry, bbctx, tmp_path):
    ref = f"{registry.host}/cache/app:push"
    app_a = digest_of(runner_a("-t", "me/app", "--cache-to", f"type=registry,ref={ref},mode=max", *APP))
    layers = [d["digest"] for d in manifest(registry, "cache/app", "push")["layers"]]
    b = fresh_runner(tmp_path, "runner-b", registry, bbctx)
    gets = blob_gets(registry, layers)
    name = f"{registry.host}/me/pushed:1"
    proc = b("-t", name, "--push", "--progress", "plain", "--cache-from", ref, *APP)
    assert set(steps(proc).values()) == {"CACHED"}, steps(proc)
    assert digest_of(proc) == app_a
    assert blob_gets(registry, layers) == gets  # zero layer bytes came down: mounted into me/pushed
    assert not any((b.root / "blobs" / "sha256" / d[7:]).exists() for d in layers)
    # uploaded: the config and busybox's 3 layers (B's own base image, not in the app's cache); the app's layers
    # were mounted from the cache repository before the push looked for them
    pushed_digest = re.search(r"manifest: (sha256:[0-9a-f]{64})", proc.stdout.decode()).group(1)
    assert re.search(rf"pushed:   {re.escape(name)}@{pushed_digest} \(4 blobs uploaded", proc.stdout.decode()), \
        proc.stdout.decode()
    assert "not stored locally" in proc.stderr.decode()
    pushed = manifest(registry, "me/pushed", "1")
    assert pushed["config"]["digest"] == app_a
    assert set(layers) <= {d["digest"] for d in pushed["layers"]}
    for digest in layers:  # every layer is really in the pushed repository
        assert registry.request_count("HEAD", f"/me/pushed/blobs/{digest}") >= 1
        assert hashlib.sha256(blob(registry, "me/pushed", digest)).hexdigest() == digest[7:]


def test_tampered_blob_and_forged_record_are_rebuilt(runner_a, registry, bbctx, tmp_path):
    ref = f"{registry.host}/cache/app:tamper"
    runner_a("-t", "me/app", "--cache-to", f"type=registry,ref={ref},mode=max", *APP)
    doc = manifest(registry, "cache/app", "tamper")
    config = json.loads(blob(registry, "cache/app", doc["config"]["digest"]))
    by_instruction = {r["description"]["instruction"]: r for r in config["records"]}
    victim = next(r for i, r in by_instruction.items() if "rm /tmp/deleteme" in i)
    victim_blob = doc["layers"][victim["layer"]]["digest"]
    data = next(Path(registry.storage).rglob(f"blobs/sha256/{victim_blob[7:9]}/{victim_blob[7:]}/data"))
    original = data.read_bytes()
    data.write_bytes(b"\x1f\x8b" + b"not the layer" * 10)  # the registry serves it under the old digest
    try:
        b = fresh_runner(tmp_path, "runner-b", registry, bbctx)
        proc = b("-t", "me/app", "--progress", "plain", "--cache-from", ref, *APP)
    finally:  # blobs are shared by every repository of the registry: the other tests need it whole
        data.write_bytes(original)
    err = proc.stderr.decode()
    assert re.search(rf"layer {victim_blob[:19]} cannot be used, the step is rebuilt", err), err
    assert not (b.root / "blobs" / "sha256" / victim_blob[7:]).exists()
    states = steps(proc)
    assert [s for t, s in states.items() if "rm /tmp/deleteme" in t] == ["CACHED"]  # its key hit; its layer rebuilt
    run = b("run", "--rm", "me/app")
    assert run.returncode == 0

    # a record whose inputs do not hash to its key is dropped: that step is built
    forged = dict(config, records=[dict(r, description=dict(r["description"], inputs=dict(
        r["description"]["inputs"], argv=["/bin/sh", "-c", "echo forged"])))
        if r is by_instruction[next(i for i in by_instruction if "whoami" in i)] else r for r in config["records"]])
    body = json.dumps(forged).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    (tmp_path / "forged.json").write_bytes(body)
    client = Registry(registry.host)
    client.upload_blob("cache/app", digest, tmp_path / "forged.json", scope="")
    doc = dict(doc, config=dict(doc["config"], digest=digest, size=len(body)))
    client.put_manifest("cache/app", "forged", json.dumps(doc).encode(), doc["mediaType"], scope="")
    c = fresh_runner(tmp_path, "runner-c", registry, bbctx)
    proc = c("-t", "me/app", "--progress", "plain", "--cache-from", f"{registry.host}/cache/app:forged", *APP)
    assert "ignored: its key does not match its inputs" in proc.stderr.decode(), proc.stderr.decode()
    assert [s for t, s in steps(proc).items() if "whoami" in t] == ["DONE"]


def test_unreachable_cache_is_a_warning_and_a_cache_to_failure_an_error(runner_a, registry, tmp_path):
    from tests.integration.registry import free_port

    gone = f"127.0.0.1:{free_port()}/cache/app:x"
    proc = runner_a("-t", "me/app", "--cache-from", gone, "--cache-from", f"{registry.host}/cache/none:x", *APP)
    err = proc.stderr.decode()
    assert f"--cache-from type=registry,ref={gone}: cannot use it, building without it" in err, err
    assert "cache/none:x: cannot use it" in err
    proc = runner_a("-t", "me/app", "--cache-to", f"type=registry,ref={gone}", *APP, check=False)
    assert proc.returncode == 1 and "--cache-to type=registry" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    proc = runner_a("-t", "me/app", "--cache-to", f"type=registry,ref={gone},ignore-error=true", *APP)
    assert "failed (ignore-error=true)" in proc.stderr.decode()


def test_local_cache_directory_two_runners(runner_a, registry, bbctx, tmp_path):
    dest = tmp_path / "ci-cache"
    app_a = digest_of(runner_a("-t", "me/app", "--cache-to", f"type=local,dest={dest},mode=max", *APP))
    assert json.loads((dest / "index.json").read_text())["manifests"]
    assert not list(dest.rglob(".*"))  # no temp file left: every file was renamed into place
    b = fresh_runner(tmp_path, "runner-b", registry, bbctx)
    proc = b("-t", "me/app", "--progress", "plain", "--cache-from", f"type=local,src={dest}", *APP)
    assert set(steps(proc).values()) == {"CACHED"}, steps(proc)
    assert digest_of(proc) == app_a
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    top = json.loads((copy / "index.json").read_text())["manifests"][0]["digest"]
    layers = json.loads((copy / "blobs" / "sha256" / top[7:]).read_bytes())["layers"]
    (copy / "blobs" / "sha256" / layers[-1]["digest"][7:]).write_bytes(b"damaged")
    c = fresh_runner(tmp_path, "runner-c", registry, bbctx)
    proc = c("-t", "me/app", "--progress", "plain", "--cache-from", f"type=local,src={copy}", *APP)
    assert "cannot be used, the step is rebuilt" in proc.stderr.decode()


def test_inline_cache_two_runners(runner_a, registry, bbctx, tmp_path):
    first, second = f"{registry.host}/me/inline:1", f"{registry.host}/me/inline:2"
    app_a = digest_of(runner_a("-t", first, "--push", "--cache-to", "type=inline", *APP))
    b = fresh_runner(tmp_path, "runner-b", registry, bbctx)
    proc = b("-t", second, "--push", "--progress", "plain", "--cache-from", first, "--cache-to", "type=inline",
             *APP)
    assert set(steps(proc).values()) == {"CACHED"}, steps(proc)
    assert digest_of(proc) == app_a
