"""Hostile contexts and registries against the real `pybuild` command: what .dockerignore excludes never reaches
a layer, whether named through a symlink or read through a RUN bind mount of the context (BuildKit never sends
excluded files); a symlinked Dockerfile cannot show a host file; a trickling registry stops the build at
--registry-deadline with an error naming the image and the registry."""
from __future__ import annotations

import os
import tarfile
import time

import pytest

from tests.httpserve import Handler, serving

pytestmark = pytest.mark.slow  # real builds and servers
SECRET, PRIVATE = "TOPSECRET-VALUE", "PRIVATE-KEY-VALUE"


@pytest.fixture
def context(tmp_path):
    """A context whose .dockerignore excludes secret.txt and private/, with symlinks pointing into them."""
    ctx = tmp_path / "ctx"
    (ctx / "private").mkdir(parents=True)
    (ctx / "sub").mkdir()
    (ctx / "secret.txt").write_text(SECRET + "\n")
    (ctx / "private" / "key").write_text(PRIVATE + "\n")
    (ctx / "pub.txt").write_text("public\n")
    os.symlink("secret.txt", ctx / "link")
    os.symlink("private", ctx / "plink")
    os.symlink("../private", ctx / "sub" / "up")
    os.symlink("/secret.txt", ctx / "abs")
    os.symlink("pub.txt", ctx / "publink")
    (ctx / ".dockerignore").write_text("secret.txt\nprivate\n")
    return ctx


def layer_bytes(layout_tar) -> bytes:
    """Every file's content in every layer of an OCI layout tar, concatenated."""
    out = []
    with tarfile.open(layout_tar) as layout:
        for member in layout.getmembers():
            if not member.isfile() or "/blobs/" not in f"/{member.name}":
                continue
            blob = layout.extractfile(member)
            try:
                with tarfile.open(fileobj=blob, mode="r:*") as layer:
                    out += [layer.extractfile(m).read() for m in layer.getmembers() if m.isfile()]
            except tarfile.TarError:
                continue  # a config or manifest
    return b"".join(out)


@pytest.mark.parametrize("source", ["link", "plink", "sub/up/key", "abs", "plink/key"])
def test_copy_through_a_symlink_cannot_reach_ignored_files(pybuild, context, source):
    (context / "Dockerfile").write_text(f"FROM scratch\nCOPY {source} /x\n")
    proc = pybuild(str(context), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and f"source {source!r} not found in the build context" in err, err
    assert SECRET not in err and PRIVATE not in err


def test_copy_of_a_symlink_to_a_kept_file_still_works(pybuild, context, tmp_path):
    (context / "Dockerfile").write_text("FROM scratch\nCOPY publink /d/\nCOPY . /all/\n")
    pybuild(str(context), "--output", f"type=oci,dest={tmp_path / 'out.tar'}")
    content = layer_bytes(tmp_path / "out.tar")
    assert b"public\n" in content and SECRET.encode() not in content and PRIVATE.encode() not in content


def test_a_run_bind_mount_of_the_context_sees_no_ignored_file(pybuild, busybox_image, context, tmp_path):
    (context / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        "RUN --mount=type=bind,target=/c cat /c/pub.txt /c/secret.txt /c/private/key /c/link /c/plink/key "
        "> /seen 2>/dev/null; ls -a /c > /listing; true\n"
        "RUN --mount=type=bind,target=/c,rw cat /c/secret.txt /c/pub.txt >> /seen 2>/dev/null; true\n")
    pybuild(str(context), "--output", f"type=oci,dest={tmp_path / 'out.tar'}")
    content = layer_bytes(tmp_path / "out.tar")
    assert content.count(b"public\n") >= 2 and b".dockerignore" in content
    assert SECRET.encode() not in content and PRIVATE.encode() not in content


def test_a_symlinked_dockerfile_shows_no_host_file(pybuild, tmp_path):
    host_file = tmp_path / "host-file"
    host_file.write_text("HOST-FIRST-LINE is secret\n")
    context = tmp_path / "c"
    context.mkdir()
    os.symlink(host_file, context / "Dockerfile")
    for args in ([str(context)], ["-f", str(context / "Dockerfile"), str(context)]):
        proc = pybuild(*args, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "no such file" in err and "HOST-FIRST-LINE" not in err, err


class Trickle(Handler):
    def do_GET(self):
        body = b'{"schemaVersion": 2' + b" " * 400 + b"}"
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_a_trickling_registry_stops_the_build_at_the_deadline(pybuild, tmp_path):
    with serving(Trickle) as host:
        (tmp_path / "Dockerfile").write_text(f"FROM {host}/me/slow:v1\n")
        proc = pybuild("--registry-deadline", "1", str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert f"{host}/me/slow:v1" in err and f"registry {host}" in err and "1 s deadline" in err, err
