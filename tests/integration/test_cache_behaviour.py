"""Issue 4 acceptance 2: the cache behaviour table — a rebuild does exactly the work that changed."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.integration.conftest import REPO

pytestmark = pytest.mark.slow

DOCKERFILE = """\
FROM pybuild/busybox
RUN echo base > /base
COPY a.txt /a.txt
RUN cat /a.txt > /a2
COPY b.txt /b.txt
ARG LATE=1
RUN echo $LATE > /late
COPY . /ctx/
"""
TITLES = ["FROM", "RUN /bin/sh -c echo base", "COPY a.txt", "RUN /bin/sh -c cat /a.txt", "COPY b.txt",
          "RUN /bin/sh -c echo $LATE", "COPY . /ctx/"]


def make_context(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(DOCKERFILE)
    (path / "a.txt").write_text("a\n")
    (path / "b.txt").write_text("b\n")
    (path / "ignored.txt").write_text("ignored\n")
    (path / ".dockerignore").write_text("ignored.txt\n")
    return path


def cached_steps(proc) -> dict[str, bool]:
    """instruction prefix → whether that step was CACHED."""
    log = proc.stderr.decode()
    titles = dict(re.findall(r"^#(\d+) \[[^\]]*\] (.*)$", log, re.M))
    cached = set(re.findall(r"^#(\d+) CACHED$", log, re.M))
    out = {}
    for number, title in titles.items():
        for prefix in TITLES:
            if title.startswith(prefix):
                out[prefix] = number in cached
    assert len(out) == len(TITLES), log
    return out


def expect(result: dict[str, bool], rebuilt_from: str | None) -> None:
    """Steps before `rebuilt_from` CACHED, it and every later one rebuilt (None: all CACHED)."""
    index = TITLES.index(rebuilt_from) if rebuilt_from else len(TITLES)
    wanted = {t: i < index or t == "FROM" for i, t in enumerate(TITLES)}
    assert result == wanted


@pytest.fixture
def ctx(tmp_path, pybuild, busybox_image):
    path = make_context(tmp_path / "ctx")
    pybuild("--progress", "plain", str(path))
    return path


def build(pybuild, path, *extra):
    return cached_steps(pybuild("--progress", "plain", *extra, str(path)))


def test_touch_keeps_everything_cached(pybuild, ctx):
    os.utime(ctx / "a.txt", (1, 1))
    os.utime(ctx / "b.txt")
    expect(build(pybuild, ctx), None)


def test_one_byte_change_rebuilds_from_that_copy(pybuild, ctx):
    (ctx / "b.txt").write_text("B\n")
    expect(build(pybuild, ctx), "COPY b.txt")
    (ctx / "a.txt").write_text("A\n")
    expect(build(pybuild, ctx), "COPY a.txt")


def test_ignored_file_change_keeps_everything_cached(pybuild, ctx):
    (ctx / "ignored.txt").write_text("changed\n")
    expect(build(pybuild, ctx), None)


def test_late_build_arg_keeps_earlier_steps_cached(pybuild, ctx):
    expect(build(pybuild, ctx, "--build-arg", "LATE=2"), "RUN /bin/sh -c echo $LATE")


def test_chmod_rebuilds_the_copy(pybuild, ctx):
    os.chmod(ctx / "a.txt", 0o600)
    expect(build(pybuild, ctx), "COPY a.txt")


def test_no_cache_rebuilds_everything(pybuild, ctx):
    result = build(pybuild, ctx, "--no-cache")
    assert result == {t: t == "FROM" for t in TITLES}


def test_equal_content_in_a_new_directory_is_cached(pybuild, ctx, tmp_path):
    copy = tmp_path / "elsewhere" / "ctx2"
    shutil.copytree(ctx, copy)
    expect(build(pybuild, copy), None)


def test_tar_context_on_stdin_and_dockerfile_outside(pybuild, ctx, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(ctx, arcname=".")
    proc = pybuild("--progress", "plain", "-", input=buf.getvalue())
    expect(cached_steps(proc), None)
    outside = tmp_path / "Dockerfile.outside"
    outside.write_text(DOCKERFILE)
    expect(build(pybuild, ctx, "-f", str(outside)), None)
    proc = pybuild("--progress", "plain", "-f", "-", str(ctx), input=DOCKERFILE.encode())
    expect(cached_steps(proc), None)


def oci_layers(layout: Path) -> tuple[list[dict], list[str]]:
    """(manifest layers, config diff_ids) of the only image in an OCI layout."""
    blob = lambda d: layout / "blobs" / "sha256" / d.removeprefix("sha256:")  # noqa: E731
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads(blob(entry["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    return manifest["layers"], config["rootfs"]["diff_ids"]


def test_compression_change_keeps_steps_cached_and_their_layers_follow_it(pybuild, ctx, tmp_path):
    """A cached step's layer is re-compressed (once) when another --compression is asked for. The base here was
    built in this store, lazily: its layers have no compressed blob yet and follow the export's compression too
    (a pulled base's layers stay as pulled, BuildKit's default without force-compression)."""
    out = {name: tmp_path / name for name in ("gz", "zst", "gz2", "zst2")}
    expect(build(pybuild, ctx, "--output", f"type=oci,dest={out['gz']}"), None)
    expect(build(pybuild, ctx, "--compression", "zstd", "--output", f"type=oci,dest={out['zst']}"), None)
    expect(build(pybuild, ctx, "--output", f"type=oci,dest={out['gz2']}"), None)
    expect(build(pybuild, ctx, "--compression", "zstd", "--output", f"type=oci,dest={out['zst2']}"), None)
    gz, diff_ids = oci_layers(out["gz"])
    zst, zst_diff_ids = oci_layers(out["zst"])
    assert zst_diff_ids == diff_ids
    steps = 6  # RUN, COPY, RUN, COPY, RUN, COPY (ARG makes no layer)
    assert {layer["mediaType"] for layer in gz} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert [layer["mediaType"].rsplit("+", 1)[1] for layer in zst] == ["zstd"] * len(gz)
    for layer, diff_id in zip(zst[-steps:], diff_ids[-steps:]):
        raw = (out["zst"] / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")).read_bytes()
        assert raw.startswith(b"\x28\xb5\x2f\xfd") and layer["size"] == len(raw)
        tar = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
    assert oci_layers(out["gz2"])[0] == gz  # the original blobs, not new ones
    assert oci_layers(out["zst2"])[0] == zst  # the variant made once is reused


def test_explain_cache_names_the_changed_input(pybuild, ctx):
    (ctx / "a.txt").write_text("changed\n")
    proc = pybuild("--progress", "plain", "--explain-cache", str(ctx))
    log = proc.stderr.decode()
    assert re.search(r"cache miss: source 'a\.txt' changed", log), log
    assert re.search(r"cache miss: parent step changed", log), log


def test_dockerignore_exceptions_and_dockerfile_specific_ignore(pybuild, busybox_image, tmp_path):
    ctx = tmp_path / "ign"
    (ctx / "docs" / "sub").mkdir(parents=True)
    (ctx / "docs" / "README.md").write_text("keep\n")
    (ctx / "docs" / "sub" / "x.md").write_text("drop\n")
    (ctx / "secret.key").write_text("k\n")
    (ctx / "app.py").write_text("print()\n")
    (ctx / ".dockerignore").write_text("docs\n!docs/README.md\n*.key\n")
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nCOPY . /ctx/\nCMD find /ctx -type f\n")
    pybuild("-t", "ign/app", str(ctx))
    files = sorted(pybuild("run", "ign/app").stdout.decode().split())
    assert files == ["/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/app.py", "/ctx/docs/README.md"]
    other = tmp_path / "Other.Dockerfile"
    other.write_text("FROM pybuild/busybox\nCOPY . /ctx/\nCMD find /ctx -type f\n")
    Path(str(other) + ".dockerignore").write_text("app.py\n")
    pybuild("-t", "ign/other", "-f", str(other), str(ctx))
    files = sorted(pybuild("run", "ign/other").stdout.decode().split())
    assert "/ctx/app.py" not in files and "/ctx/secret.key" in files and "/ctx/docs/sub/x.md" in files


LOADER = """\
import atexit, json, runpy, sys
out, sys.argv = sys.argv[1], ["pybuild", *sys.argv[2:]]

def report():  # at exit: builder/cli.py's end() runs atexit handlers, then skips the teardown
    with open(out, "w") as f:
        json.dump({"modules": sorted(sys.modules)}, f)

atexit.register(report)
runpy.run_module("builder", run_name="__main__", alter_sys=True)
"""


def test_a_fully_cached_rebuild_loads_no_layer_or_registry_code(pybuild, ctx, tmp_path):
    """A fully cached rebuild is mostly interpreter start and imports (issue 6: <= 0.25 s): it writes no layer
    (zstandard and its `platform` ~4 ms) and talks to no registry (~2 ms), so it must not load that code."""
    seen = tmp_path / "modules.json"
    cmd = [sys.executable, "-c", LOADER, str(seen), "build", "--root", str(pybuild.root), "--progress", "plain",
           "-t", "me/cached", str(ctx)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120)
    loaded = json.loads(seen.read_text())
    assert done.returncode == 0, done.stderr.decode()
    expect(cached_steps(done), None)
    heavy = ("zstandard", "zlib_ng", "cache.compress", "cache.pgzip", "builder.export.registry", "tarfile",
             "platform")
    assert [m for m in loaded["modules"] if any(m == h or m.startswith(h + ".") for h in heavy)] == []
