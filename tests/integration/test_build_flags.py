"""docker build's --network (RUN's default network) and --label (labels over the Dockerfile's), end to end."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import require_tool
from tests.httpserve import Handler, serving

pytestmark = pytest.mark.slow


class Hello(Handler):
    def do_GET(self):
        self.reply(200, b"hello from the host\n")


@pytest.fixture
def host_server():
    with serving(Hello) as host:
        yield int(host.rsplit(":", 1)[1])


def test_build_network_host_is_the_default_of_runs(pybuild, busybox_image, tmp_path, host_server):
    get = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc 127.0.0.1 {host_server}'  # busybox's wget crashes here
    (tmp_path / "Dockerfile").write_text(
        f"FROM pybuild/busybox\nRUN {get} > /default 2>&1; true\nRUN --network=none {get} > /none 2>&1; true\n")
    pybuild("-t", "flags/net", "--no-cache", str(tmp_path))
    read = lambda image, path: pybuild("run", image, "cat", path).stdout.decode()  # noqa: E731
    assert "hello from the host" not in read("flags/net", "/default")  # the default bridge: not the host's loopback
    pybuild("-t", "flags/net-host", "--network", "host", str(tmp_path))
    assert "hello from the host" in read("flags/net-host", "/default")
    assert "hello from the host" not in read("flags/net-host", "/none")  # RUN --network=none still wins


def test_build_labels_override_the_dockerfiles(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nLABEL team=core stage=dev\n")
    layout = tmp_path / "oci"
    pybuild("-t", "flags/label:1", "--label", "stage=release", "--label", "org.opencontainers.image.revision=abc",
            "--label", "flag", "--output", f"type=oci,dest={layout}", str(tmp_path))
    proc = subprocess.run([require_tool("skopeo"), "inspect", "--config", f"oci:{layout}:1"], capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["config"]["Labels"] == {
        "team": "core", "stage": "release", "org.opencontainers.image.revision": "abc", "flag": ""}


def test_platform_flag_takes_the_build_machines_and_refuses_others(pybuild, busybox_image, tmp_path):
    from builder.plan.imageconfig import host_architecture

    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nARG TARGETPLATFORM\nRUN echo $TARGETPLATFORM > /p\n")
    pybuild("-t", "flags/plat", "--platform", host_architecture(), str(tmp_path))  # "amd64" means linux/amd64
    assert pybuild("run", "flags/plat", "cat", "/p").stdout.decode() == f"linux/{host_architecture()}\n"
    other = "linux/s390x" if host_architecture() != "s390x" else "linux/amd64"
    for value, words in [(other, f"--platform {other}: this build runs on linux/{host_architecture()}"),
                         (f"linux/{host_architecture()},{other}", "multi-platform")]:
        proc = pybuild("--platform", value, str(tmp_path), check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err and words in err, err


def test_metadata_file_has_buildx_keys(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nLABEL m=1\n")
    meta = tmp_path / "meta.json"
    out = pybuild("-t", "flags/meta:1", "-t", "reg.example:5000/x/meta", "--metadata-file", str(meta),
                  str(tmp_path)).stdout.decode()
    doc = json.loads(meta.read_text())
    assert f"image id: {doc['containerimage.config.digest']}" in out
    assert f"manifest: {doc['containerimage.digest']}" in out
    assert doc["containerimage.descriptor"]["digest"] == doc["containerimage.digest"]
    assert doc["containerimage.descriptor"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert doc["image.name"] == "docker.io/flags/meta:1,reg.example:5000/x/meta:latest"


def test_no_cache_filter_rebuilds_only_the_named_stages(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox AS deps\nRUN date +%s%N > /deps\n"
        "FROM pybuild/busybox AS app\nCOPY --from=deps /deps /deps\nRUN date +%s%N > /app\n")
    pybuild("-t", "flags/ncf", str(tmp_path))
    again = pybuild("-t", "flags/ncf", "--progress", "plain", "--no-cache-filter", "app", str(tmp_path))
    log = again.stderr.decode()
    cached = {line.split()[0] for line in log.splitlines() if line.endswith(" CACHED")}
    titles = {line.split()[0]: line for line in log.splitlines() if "] RUN " in line or "] COPY " in line}
    assert {titles[n].split("] ")[1] for n in cached if n in titles} == {"RUN /bin/sh -c date +%s%N > /deps"}
    proc = pybuild("--no-cache-filter", "nope", str(tmp_path), check=False)
    assert proc.returncode == 1 and "no stage named 'nope'" in proc.stderr.decode() and "deps, app" in \
        proc.stderr.decode()


@pytest.mark.parametrize("args, words", [
    (("-f", "{tmp}",), "cannot read Dockerfile {tmp}: it is a directory"),
    (("{tmp}/Dockerfile",), "build context '{tmp}/Dockerfile' is not a directory"),
    (("--label", "=x"), "--label '=x': the key is empty"),
    (("--iidfile", "/proc/none/id"), "cannot write --iidfile /proc/none/id: No such file or directory"),
    (("--metadata-file", "/proc/none/m.json"), "cannot write --metadata-file /proc/none/m.json: No such file"),
])
def test_bad_build_arguments_are_one_clear_error(pybuild, busybox_image, tmp_path, args, words):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\n")
    args = [a.format(tmp=tmp_path) for a in args]
    proc = pybuild(*args, *([] if args[-1].endswith("Dockerfile") else [str(tmp_path)]), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err and "Errno" not in err, err
    assert words.format(tmp=tmp_path) in err, err


class Files(Handler):
    """GET /<name>: Files.content[name] with a fixed Last-Modified; anything else 404."""

    content: dict[str, bytes] = {}
    gets: list[str] = []

    def do_GET(self):
        Files.gets.append(self.path)
        name = self.path.lstrip("/")
        if name not in self.content:
            return self.reply(404, b"no such file\n")
        self.reply(200, self.content[name], {"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"})


def test_add_from_a_url_as_buildkit(pybuild, busybox_image, tmp_path):
    """ADD <url>: fetched by the builder (not unpacked, even an archive), mode 0600 unless --chmod, mtime from
    Last-Modified, named after the URL's last path segment under a dest/ directory; cached by content; a
    --checksum mismatch, an HTTP error and a URL in COPY are errors at their line."""
    import gzip
    import hashlib

    archive = gzip.compress(b"not unpacked", mtime=0)
    Files.content, Files.gets = {"tool.tar.gz": archive, "run.sh": b"#!/bin/sh\necho run v1\n"}, []
    with serving(Files) as host:
        base = f"http://{host}"
        (tmp_path / "Dockerfile").write_text(
            "FROM pybuild/busybox\n"
            f"ADD {base}/tool.tar.gz /opt/\n"
            f"ADD --chmod=755 {base}/run.sh /usr/local/bin/run\n"
            f"ADD --checksum=sha256:{hashlib.sha256(archive).hexdigest()} {base}/tool.tar.gz /checked\n")
        pybuild("-t", "flags/add-url", str(tmp_path))
        stat = pybuild("run", "flags/add-url", "stat", "-c", "%a %s %Y %n", "/opt/tool.tar.gz", "/usr/local/bin/run",
                       "/checked").stdout.decode().splitlines()
        assert stat == [f"600 {len(archive)} 1445412480 /opt/tool.tar.gz", "755 22 1445412480 /usr/local/bin/run",
                        f"600 {len(archive)} 1445412480 /checked"]
        assert pybuild("run", "flags/add-url", "run").stdout.decode() == "run v1\n"
        again = pybuild("-t", "flags/add-url", "--progress", "plain", str(tmp_path)).stderr.decode()
        assert again.count(" CACHED") == 4  # FROM and the three ADDs: the same bytes came back
        Files.content["run.sh"] = b"#!/bin/sh\necho run v2\n"
        pybuild("-t", "flags/add-url", str(tmp_path))
        assert pybuild("run", "flags/add-url", "run").stdout.decode() == "run v2\n"

        for line, words in [(f"ADD --checksum=sha256:{'0' * 64} {base}/run.sh /x", "--checksum says sha256:000"),
                            (f"ADD {base}/missing.txt /x", "404 Not Found"),
                            (f"COPY {base}/run.sh /x", "COPY does not take URLs")]:
            (tmp_path / "Dockerfile").write_text(f"FROM pybuild/busybox\n{line}\n")
            proc = pybuild(str(tmp_path), check=False)
            err = proc.stderr.decode()
            assert proc.returncode == 1 and "Traceback" not in err and "Dockerfile:2" in err and words in err, err
