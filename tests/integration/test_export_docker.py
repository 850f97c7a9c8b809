"""`--output type=docker,dest=FILE`: a `docker save` archive that is also an OCI layout (as docker >= 25 writes).

Referees: skopeo reads it as `docker-archive:` (manifest.json) and as `oci-archive:` (index.json); the copy skopeo
makes into an OCI directory unpacks with umoci into the files and runtime config the Dockerfile describes.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.integration.conftest import TESTDATA

pytestmark = pytest.mark.slow

APP = ("-f", str(TESTDATA / "app" / "Dockerfile"), str(TESTDATA / "app"))


def digests(proc) -> tuple[str, str]:
    out = proc.stdout.decode()
    image_id = re.search(r"image id: (sha256:[0-9a-f]{64})", out)
    manifest = re.search(r"manifest: (sha256:[0-9a-f]{64})", out)
    assert image_id and manifest, out + proc.stderr.decode()
    return image_id.group(1), manifest.group(1)


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def skopeo_json(*args: str) -> dict:
    proc = subprocess.run([require_tool("skopeo"), *args], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout)


def test_archive_has_docker_manifest_and_oci_index(pybuild, app_image, tmp_path):
    archive = tmp_path / "app.tar"
    image_id, manifest_digest = digests(pybuild("-t", "me/app:v1", "-t", "registry.example:5000/team/app:2", *APP,
                                                "--output", f"type=docker,dest={archive}"))
    files = members(archive)
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], name
    (entry,) = json.loads(files["manifest.json"])
    assert entry["RepoTags"] == ["me/app:v1", "registry.example:5000/team/app:2"]  # docker's familiar names
    assert entry["Config"] == f"blobs/sha256/{image_id[7:]}"
    config = json.loads(files[entry["Config"]])
    assert len(entry["Layers"]) == len(config["rootfs"]["diff_ids"]) >= 2
    assert all(layer in files for layer in entry["Layers"])
    index = json.loads(files["index.json"])
    assert [m["digest"] for m in index["manifests"]] == [manifest_digest, manifest_digest]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    manifest = json.loads(files[f"blobs/sha256/{manifest_digest[7:]}"])
    assert [l["digest"][7:] for l in manifest["layers"]] == [l.rsplit("/", 1)[1] for l in entry["Layers"]]


def test_skopeo_and_umoci_accept_the_archive(pybuild, app_image, tmp_path):
    umoci = require_tool("umoci")
    archive = tmp_path / "app.tar"
    image_id, manifest_digest = digests(pybuild("-t", "me/app:v1", *APP, "--output",
                                                f"type=docker,dest={archive}"))
    info = skopeo_json("inspect", f"docker-archive:{archive}")
    assert "GREETING=hello from pybuild" in info["Env"]
    assert skopeo_json("inspect", "--config", f"docker-archive:{archive}")["config"]["User"] == "app"
    # the same file as an OCI archive: the manifest is the one pybuild built, byte for byte
    assert skopeo_json("inspect", f"oci-archive:{archive}")["Digest"] == manifest_digest
    layout = tmp_path / "oci"
    subprocess.run([require_tool("skopeo"), "copy", f"docker-archive:{archive}", f"oci:{layout}:v1"],
                   check=True, capture_output=True, timeout=120)
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:v1", str(bundle)], check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    assert (rootfs / "srv/app/built.txt").read_text() == "built by pybuild\n"
    assert (rootfs / "home/app/whoami.txt").read_text() == "app\n"
    assert (rootfs / "srv/app/conf/server.conf").stat().st_uid == 1000
    assert not (rootfs / "tmp/deleteme").exists()
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/sh", "/srv/app/app.sh", "world"]
    assert spec["process"]["cwd"] == "/srv/app"
    assert spec["process"]["user"]["uid"] == 1000
    assert "GREETING=hello from pybuild" in spec["process"]["env"]
    # skopeo re-serialises the config when it converts docker → OCI: the same document in other bytes (Go trims
    # trailing zeros of fractional seconds), so compare the documents
    copied = json.loads((layout / "index.json").read_text())["manifests"][0]
    copied_manifest = json.loads((layout / "blobs/sha256" / copied["digest"][7:]).read_text())
    theirs = (layout / "blobs/sha256" / copied_manifest["config"]["digest"][7:]).read_text()
    ours = members(archive)[f"blobs/sha256/{image_id[7:]}"].decode()
    assert same_times(theirs) == same_times(ours)


def same_times(config: str) -> dict:
    return json.loads(re.sub(r'(\.\d*?)0*Z"', r'\1Z"', config).replace('.Z"', 'Z"'))


def test_archive_to_stdout(pybuild, app_image, tmp_path):
    proc = pybuild("-t", "me/app:v1", *APP, "--output", "type=docker,dest=-", "--progress", "plain")
    archive = tmp_path / "stdout.tar"
    archive.write_bytes(proc.stdout)
    (entry,) = json.loads(members(archive)["manifest.json"])
    assert entry["RepoTags"] == ["me/app:v1"]
    assert "image id: sha256:" in proc.stderr.decode()  # the summary moves to stderr, stdout is the tar only
    assert skopeo_json("inspect", f"docker-archive:{archive}")["Env"]


def test_oci_output_as_a_tarball_as_buildx(pybuild, app_image, tmp_path):
    """buildx's oci exporter writes a tar (tar=true); pybuild does for dest=FILE.tar, dest=- or tar=true, and keeps
    a layout directory for any other dest or tar=false. The tar is the layout: no docker manifest.json."""
    archive, named, layout = tmp_path / "app-oci.tar", tmp_path / "app-oci", tmp_path / "dir.tar"
    _, manifest_digest = digests(pybuild("-t", "me/app:v1", *APP, "--output", f"type=oci,dest={archive}",
                                         "--output", f"type=oci,tar=true,dest={named}",
                                         "--output", f"type=oci,tar=false,dest={layout}"))
    for tarball in (archive, named):
        files = members(tarball)
        assert "manifest.json" not in files and json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
        assert [m["digest"] for m in json.loads(files["index.json"])["manifests"]] == [manifest_digest]
        assert skopeo_json("inspect", f"oci-archive:{tarball}:v1")["Digest"] == manifest_digest
    assert layout.is_dir() and skopeo_json("inspect", f"oci:{layout}:v1")["Digest"] == manifest_digest
    proc = pybuild("-t", "me/app:v1", *APP, "--output", "type=oci,dest=-", "--progress", "plain")
    streamed = tmp_path / "stdout-oci.tar"
    streamed.write_bytes(proc.stdout)
    assert streamed.read_bytes() == archive.read_bytes()  # same image, same bytes
    assert skopeo_json("inspect", "--config", f"oci-archive:{streamed}")["config"]["User"] == "app"


def test_name_option_overrides_tags_and_untagged_has_none(pybuild, app_image, tmp_path):
    named, untagged = tmp_path / "named.tar", tmp_path / "untagged.tar"
    pybuild(*APP, "--output", f"type=docker,dest={named},name=me/other:x")
    pybuild(*APP, "--output", f"type=docker,dest={untagged}")
    assert json.loads(members(named)["manifest.json"])[0]["RepoTags"] == ["me/other:x"]
    assert json.loads(members(untagged)["manifest.json"])[0]["RepoTags"] == []
    assert skopeo_json("inspect", f"docker-archive:{untagged}")["Layers"]


def test_failed_build_or_export_leaves_no_file(pybuild, busybox_image, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN exit 7\n")
    out = tmp_path / "out"
    out.mkdir()
    proc = pybuild(str(ctx), "--output", f"type=docker,dest={out / 'x.tar'}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr.decode()
    assert list(out.iterdir()) == []
    # the destination's directory is missing: a clear error, nothing written
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN true\n")
    proc = pybuild(str(ctx), "--output", f"type=docker,dest={out / 'no-such-dir' / 'x.tar'}", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "no-such-dir" in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("spec, message", [
    ("type=oci", "dest"),
    ("type=cacheonly", "unsupported"),
    ("type=docker,dest=x.tar,bogus=1", "bogus"),
])
def test_bad_output_specs_are_usage_errors(pybuild, busybox_image, tmp_path, spec, message):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\n")
    proc = pybuild(str(tmp_path), "--output", spec, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert message in err, err


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    """A docker client: $DOCKER_HOST's daemon when one answers there, else a throw-away dockerd (bench/dockerd.py)."""
    import os
    import shutil

    from bench.dockerd import CLIENT, DockerdUnavailable, start_dockerd
    from bench.proc import unmount_all

    if os.environ.get("DOCKER_HOST") and Path(CLIENT).exists() and \
            subprocess.run([CLIENT, "info"], capture_output=True, timeout=30).returncode == 0:
        yield lambda *args: subprocess.run([CLIENT, *args], capture_output=True, timeout=120)
        return
    work = tmp_path_factory.mktemp("dockerd")
    try:
        daemon = start_dockerd(work)
    except DockerdUnavailable as exc:
        unmount_all(work)
        pytest.skip(f"{exc} (scripts/setup.sh test installs docker.io)")
    try:
        yield daemon.docker
    finally:
        daemon.stop()
        unmount_all(work)
        shutil.rmtree(work, ignore_errors=True)


def test_docker_load_runs_the_archive(pybuild, app_image, tmp_path, docker):
    """docker 20.10 (Debian's docker.io) is the referee: `docker load` takes the archive, its image id is our
    config digest, and the image runs."""
    archive = tmp_path / "app.tar"
    tag = f"pybuild-test/app:{tmp_path.name.lower()}"
    image_id, _ = digests(pybuild("-t", tag, *APP, "--output", f"type=docker,dest={archive}"))
    try:
        loaded = docker("load", "-i", str(archive))
        assert loaded.returncode == 0, loaded.stderr.decode()
        assert f"Loaded image: {tag}" in loaded.stdout.decode()
        inspected = docker("image", "inspect", "--format", "{{.Id}}", tag)
        assert inspected.stdout.decode().strip() == image_id  # docker's image id is our config digest
        ran = docker("run", "--rm", "--network", "none", tag)
        assert "hello from pybuild, world!" in ran.stdout.decode(), ran.stderr.decode()
    finally:
        docker("rmi", "-f", tag)
