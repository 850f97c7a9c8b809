"""Issue 2 acceptance: the demo app builds, caches, runs isolated, and exports an image other tools accept."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.integration.conftest import TESTDATA, mountinfo

pytestmark = pytest.mark.slow


def image_id(proc) -> str:
    match = re.search(r"image id: (sha256:[0-9a-f]{64})", proc.stdout.decode())
    assert match, proc.stdout.decode() + proc.stderr.decode()
    return match.group(1)


def test_rebuild_is_fully_cached_with_the_same_digest(pybuild, app_image):
    args = ("-f", str(TESTDATA / "app" / "Dockerfile"), "-t", "me/app", "--progress", "plain",
            str(TESTDATA / "app"))
    first = pybuild(*args)
    second = pybuild(*args)
    log = second.stderr.decode()
    steps = re.findall(r"^#(\d+) \[", log, re.M)
    cached = re.findall(r"^#(\d+) CACHED$", log, re.M)
    assert steps and sorted(steps) == sorted(cached), log
    assert image_id(first) == image_id(second)
    manifest = re.search(r"manifest: (sha256:\w+)", second.stdout.decode()).group(1)
    assert manifest == re.search(r"manifest: (sha256:\w+)", first.stdout.decode()).group(1)


def test_run_prints_what_cmd_prints(pybuild, app_image):
    out = pybuild("run", "--rm", app_image).stdout.decode()
    assert "hello from pybuild, world!" in out
    assert "assets: unpacked from assets.tar" in out
    assert "tool: hello-tool works" in out
    assert "user: app" in out


def test_run_is_isolated(pybuild, app_image):
    host_cmdline = Path("/proc/1/cmdline").read_bytes()
    cmdline = pybuild("run", "--rm", app_image, "cat", "/proc/1/cmdline").stdout
    assert cmdline and cmdline != host_cmdline
    ps = pybuild("run", "--rm", app_image, "ps", "-o", "pid").stdout.decode().split()
    assert len(ps) <= 5, ps  # header, init, ps (and sh): not the host's processes
    hostname = pybuild("run", "--rm", app_image, "hostname").stdout.decode().strip()
    assert hostname and hostname != socket.gethostname()
    links = pybuild("run", "--rm", app_image, "ip", "link").stdout.decode()
    names = re.findall(r"^\d+: ([^:@]+)", links, re.M)
    assert names == ["lo"], links
    listing = set(pybuild("run", "--rm", app_image, "ls", "/").stdout.decode().split())
    assert {"bin", "etc", "srv", "data"} <= listing
    assert "work" not in listing  # the host's /work, where this repository lives, is not visible


def test_oci_layout_is_accepted_by_skopeo_umoci_and_runc(pybuild, app_image, tmp_path):
    skopeo, umoci, runc = require_tool("skopeo"), require_tool("umoci"), require_tool("runc")
    layout = tmp_path / "layout"
    pybuild("-f", str(TESTDATA / "app" / "Dockerfile"), "-t", "me/app:v1", "--output",
            f"type=oci,dest={layout}", str(TESTDATA / "app"))
    info = json.loads(subprocess.run([skopeo, "inspect", f"oci:{layout}:v1"], check=True,
                                     capture_output=True).stdout)
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci:{layout}:v1"], check=True,
                                       capture_output=True).stdout)["config"]
    assert "GREETING=hello from pybuild" in info["Env"]
    assert config["User"] == "app"
    assert config["WorkingDir"] == "/srv/app"
    assert config["Entrypoint"] == ["/bin/sh", "/srv/app/app.sh"] and config["Cmd"] == ["world"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "9090/udp"}
    assert set(config["Volumes"]) == {"/data"}
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:v1", str(bundle)], check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    assert (rootfs / "srv/app/built.txt").read_text() == "built by pybuild\n"
    assert (rootfs / "srv/app/assets/nested/deep.txt").exists()
    assert (rootfs / "srv/app/conf/server.conf").stat().st_uid == 1000
    assert not (rootfs / "srv/app/conf/notes.txt").exists()
    assert (rootfs / "tmp").is_dir() and not (rootfs / "tmp/deleteme").exists()
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"pybuild-test-{os.getpid()}"
    proc = subprocess.run([runc, "run", "--bundle", str(bundle), name], capture_output=True, timeout=60)
    subprocess.run([runc, "delete", "--force", name], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "hello from pybuild, world!" in proc.stdout.decode()


def test_failing_run_reports_line_and_leaves_nothing(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo start\nRUN echo failing >&2 && \\\n"
                                         "    exit 3\nRUN echo never\n")
    before = mountinfo(pybuild.root, tmp_path)
    images_before = pybuild("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split()
    proc = pybuild("-t", "me/broken", "--progress", "plain", str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert "exit code: 3" in err
    assert re.search(r"Dockerfile:3", err), err
    assert "    3 | RUN echo failing" in err and "    4 |     exit 3" in err
    assert "failing" in err
    assert mountinfo(pybuild.root, tmp_path) == before
    assert pybuild("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode().split() == images_before
    assert "me/broken" not in " ".join(images_before)
    tmp_dir = pybuild.root / "tmp"
    assert not tmp_dir.exists() or not any(tmp_dir.iterdir())


def test_copy_cannot_leave_the_context(pybuild, busybox_image, tmp_path):
    (tmp_path / "inside").write_text("ok\n")
    os.symlink("/etc/shadow", tmp_path / "shadow-link")
    for source in ("../inside-not-here", "shadow-link"):
        (tmp_path / "Dockerfile").write_text(f"FROM pybuild/busybox\nCOPY {source} /x\n")
        proc = pybuild(str(tmp_path), check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err
        assert "not found in the build context" in err, err
        assert "Dockerfile:2" in err


def test_nothing_is_written_outside_the_rootfs(pybuild, busybox_image, tmp_path):
    marker = f"pybuild-escape-{os.getpid()}"
    (tmp_path / "payload").write_text("payload\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        f"RUN ln -s /etc /escape && ln -s ../../../../tmp /up && echo x > /{marker}\n"
        f"COPY payload /escape/{marker}\n"
        f"COPY payload /up/{marker}\n"
        f"WORKDIR /escape/{marker}-dir\n")
    pybuild("-t", "me/escape", str(tmp_path))
    assert not Path(f"/etc/{marker}").exists() and not Path(f"/etc/{marker}-dir").exists()
    assert not Path(f"/tmp/{marker}").exists() and not Path(f"/{marker}").exists()
    out = pybuild("run", "me/escape", "cat", f"/etc/{marker}", f"/tmp/{marker}").stdout.decode()
    assert out == "payload\npayload\n"
