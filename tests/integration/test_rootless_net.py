"""Rootless RUN's network (issue 22): slirp4netns NAT reaches what the host reaches, never the host's loopback.

/dev/net/tun here is 0600 root (a container; Debian's default is 0666), so the user's pybuild runs in a private
mount namespace of the test's own with a fresh node open to all (rootless_users.PRIVATE_DEV). The "host" is the
pytest session's network namespace (tests/conftest.py): the test adds a veth with 10.231.0.1/24 to it and serves
HTTP there and on its 127.0.0.1 with the same port.
"""
from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading

import pytest

from tests.conftest import require_tool
from tests.integration.rootless_users import ranged, users  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow
ADDRESS = "10.231.0.1"


class Served(http.server.ThreadingHTTPServer):
    """An HTTP server on its own thread that answers `token` and counts the requests it got."""

    def __init__(self, host: str, port: int, token: str) -> None:
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                served.requests += 1
                body = token.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.requests = 0
        super().__init__((host, port), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.thread.join()
        self.server_close()


@pytest.fixture
def host_link():
    """A veth in the session's network namespace with ADDRESS/24 (this kernel has no dummy links); removed after."""
    ip = require_tool("ip")
    name = f"pbrl{os.getpid() % 100000}"
    made = subprocess.run([ip, "link", "add", name, "type", "veth", "peer", "name", name + "p"], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a veth in the test's namespace: {made.stderr.strip()}")
    try:
        for argv in (["addr", "add", f"{ADDRESS}/24", "dev", name], ["link", "set", name, "up"],
                     ["link", "set", name + "p", "up"]):
            subprocess.run([ip, *argv], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run([ip, "link", "del", name], capture_output=True)


def test_rootless_run_reaches_the_host_network_through_slirp_but_not_its_loopback(ranged, host_link):
    require_tool("slirp4netns")
    outside = Served(ADDRESS, 0, "via-slirp-ok")
    port = outside.server_address[1]
    loopback = Served("127.0.0.1", port, "host-loopback-reached")
    try:
        ctx = ranged.home / "slirp-ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            "FROM pybuild/busybox\n"
            "RUN ip -o -4 addr show tap0 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 %s %d && echo && "
            "(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.0.2.2 %d || true) > /got && cat /got && echo && "
            "if grep -q reached /got; then echo LOOPBACK-OPEN; else echo loopback-closed; fi\n"
            % (ADDRESS, port, port))  # busybox-static's wget crashes in glibc's static resolver: nc as elsewhere
        proc = ranged.pybuild("build", "--progress", "plain", "--no-cache", str(ctx), devices=("tun",))
    finally:
        outside.stop()
        loopback.stop()
    err = proc.stderr.decode()
    said = [line.split(" ", 2)[2] for line in err.splitlines() if re.match(r"#\d+ \d+\.\d+ ", line)]  # RUN's output
    assert "via-slirp-ok" in said and any("inet 10.0.2.100/24" in line for line in said), err
    assert "slirp4netns failed" not in err and "isolated" not in err, err
    assert "loopback-closed" in said and "LOOPBACK-OPEN" not in said, err
    assert outside.requests == 1 and loopback.requests == 0
    assert not ranged.leftovers()


def test_the_private_dev_node_is_the_tests_own(ranged):
    """The host's /dev/net/tun keeps its mode: the 0666 node exists only in the namespace the test made."""
    before = os.stat("/dev/net/tun")
    ranged.pybuild("version", devices=("tun",))
    after = os.stat("/dev/net/tun")
    assert (before.st_mode, before.st_ino) == (after.st_mode, after.st_ino)
