"""A throw-away Docker registry (Debian's docker-registry, i.e. distribution 2.8) on a free 127.0.0.1 port.

`start_registry` writes a config YAML and a storage directory under a temporary directory, starts
`docker-registry serve`, waits for `GET /v2/` to answer and returns a `TestRegistry`; `stop` kills it.
"""
from __future__ import annotations

import hashlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_tool

CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    readonly:
      enabled: {readonly}
http:
  addr: 127.0.0.1:{port}
  secret: pybuild-tests
{auth}"""
AUTH = """\
auth:
  htpasswd:
    realm: pybuild-tests
    path: {path}
"""


@dataclass
class TestRegistry:
    __test__ = False  # not a test class

    host: str  # 127.0.0.1:PORT
    storage: Path
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def request_count(self, method: str, fragment: str) -> int:
        """How often the registry's access log shows a request like `PUT .../blobs/uploads`."""
        return sum(1 for line in self.log.read_text().splitlines() if f'"{method} ' in line and fragment in line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (what distribution's htpasswd auth accepts), made with the stdlib crypt module."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated in 3.11, gone in 3.13: the auth test skips then
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))  # cost 4: fast tests
    if not hashed or not hashed.startswith("$2"):
        raise RuntimeError("this libc's crypt() has no bcrypt")
    return f"{user}:{hashed}\n"


def start_registry(workdir: Path, readonly: bool = False, users: dict[str, str] | None = None) -> TestRegistry:
    """``users`` (name → password) turns on htpasswd (HTTP Basic) authentication."""
    binary = require_tool("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = workdir / "storage"
    config = workdir / "config.yml"
    auth = ""
    if users:
        (workdir / "htpasswd").write_text("".join(htpasswd_line(u, p) for u, p in users.items()))
        auth = AUTH.format(path=workdir / "htpasswd")
    config.write_text(CONFIG.format(storage=storage, port=port, readonly=str(readonly).lower(), auth=auth))
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    registry = TestRegistry(f"127.0.0.1:{port}", storage, process, log)
    deadline = time.monotonic() + 60  # a guard: the registry starts in seconds on a loaded machine
    while True:
        try:
            with urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=1):
                return registry
        except urllib.error.HTTPError as exc:  # 401: up, and asking for credentials
            exc.close()
            return registry
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                registry.stop()
                raise RuntimeError(f"docker-registry did not start:\n{log.read_text()}")
            time.sleep(0.05)


def push_raw(host: str, repo: str, blobs: list[bytes], manifest: bytes, ref: str = "1",
             media_type: str = "application/vnd.oci.image.manifest.v1+json") -> None:
    """Upload ``blobs`` as they are (monolithic POST + PUT) and ``manifest`` under ``ref``: for images pybuild could
    not have made (hostile or odd layers)."""
    for data in blobs:
        started = urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/",
                                                                data=b"", method="POST"))
        location = started.headers["Location"]
        location = location if location.startswith("http") else f"http://{host}{location}"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        urllib.request.urlopen(urllib.request.Request(
            f"{location}{'&' if '?' in location else '?'}digest={digest}", data=data, method="PUT",
            headers={"Content-Type": "application/octet-stream"}))
    urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{ref}", data=manifest,
                                                  method="PUT", headers={"Content-Type": media_type}))
