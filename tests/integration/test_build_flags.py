"""docker build's --network (RUN's default network) and --label (labels over the Dockerfile's), end to end."""
from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import require_tool

pytestmark = pytest.mark.slow


class Hello(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def host_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_build_network_host_is_the_default_of_runs(pybuild, busybox_image, tmp_path, host_server):
    get = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc 127.0.0.1 {host_server}'  # busybox's wget crashes here
    (tmp_path / "Dockerfile").write_text(
        f"FROM pybuild/busybox\nRUN {get} > /default 2>&1; true\nRUN --network=none {get} > /none 2>&1; true\n")
    pybuild("-t", "flags/net", "--no-cache", str(tmp_path))
    read = lambda image, path: pybuild("run", image, "cat", path).stdout.decode()  # noqa: E731
    assert "hello from the host" not in read("flags/net", "/default")  # the default is an isolated network
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
