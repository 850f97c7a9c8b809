"""Users for the rootless tests (issue 22): made by the test (root) with or without subordinate ranges, removed after.

The test makes its own users with unique names: one with subordinate ranges (`usermod --add-subuids/--add-subgids`),
one without; `userdel` removes both and their ranges in a finally. pybuild runs as them through
`setpriv --reuid --regid --init-groups` (no root left in the process), with the system interpreter and PYTHONPATH
naming this checkout and the venv's site-packages (the venv's own interpreter may live under a home directory the
user cannot read). `devices` runs it in a private mount namespace of its own where fresh device nodes open to all
(mode 0666) stand over /dev/net/tun or /dev/fuse: the host's nodes (0600 root in a container) are never changed.
"""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, TESTDATA

EPOCH = "1700000000"
SYSTEM_PYTHON = "/usr/bin/python3"
RANGE_COUNT = 65536
DEVICES = {"tun": (10, 200), "fuse": (10, 229)}  # the kernel's fixed misc numbers for /dev/net/tun and /dev/fuse
# In a mount namespace of the test's own: a tmpfs over /dev/net holds fresh nodes open to all; /dev/net/tun is one,
# /dev/net/fuse is bound over /dev/fuse. Nothing changes on the host (Debian's default for both is 0666).
PRIVATE_DEV = """set -e
mount -t tmpfs -o mode=0755,size=64k pybuild-test-dev /dev/net
for node in $PB_NODES; do
  name=${node%%:*}; numbers=${node#*:}
  mknod -m 0666 "/dev/net/$name" c "${numbers%:*}" "${numbers#*:}"
done
if [ -e /dev/net/fuse ]; then mount --bind /dev/net/fuse /dev/fuse; fi
exec "$@"
"""


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path
    subids: range | None

    def pybuild(self, *args: str, check: bool = True, env: dict | None = None,
                devices: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """`python -m builder ARGS` as this user, in its home, with its default (per-user) store; `devices`
        ("tun", "fuse") are open to the user in a private mount namespace (PRIVATE_DEV)."""
        environ = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(self.home),
                   "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}", "SOURCE_DATE_EPOCH": EPOCH,
                   **(env or {})}
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "env", "-i",
               *(f"{k}={v}" for k, v in environ.items()), SYSTEM_PYTHON, "-m", "builder", *args]
        if devices:
            nodes = " ".join(f"{name}:{DEVICES[name][0]}:{DEVICES[name][1]}" for name in devices)
            cmd = ["env", f"PB_NODES={nodes}", "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   PRIVATE_DEV, "sh", *cmd]
        proc = subprocess.run(cmd, capture_output=True, cwd=self.home, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} as {self.name} failed ({proc.returncode}):\n"
                                 f"{proc.stdout.decode()}\n{proc.stderr.decode()}")
        return proc

    def leftovers(self) -> list[str]:
        """Processes still there as this user or one of its subordinate ids, after the kernel's asynchronous
        teardown of killed namespaces (SIGKILLed processes may take a moment to be reaped) has had 10 s."""
        for _ in range(100):
            found = self._processes()
            if not found:
                return []
            time.sleep(0.1)
        return found

    def _processes(self) -> list[str]:
        ids = {self.uid} | set(self.subids or ())
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid in ids:
                        found.append(f"{entry.name}: {(entry / 'stat').read_text()[:120]}")
        return found


def _skip_reasons() -> str | None:
    if os.geteuid() != 0:
        return "the rootless tests make their own users: run them as root"
    for tool in ("setpriv", "useradd", "usermod", "userdel", "newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/setup.sh installs uidmap; passwd and util-linux bring the rest)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing: the test user needs an interpreter outside root's home"
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        return f"{SYSTEM_PYTHON} is Python {version}, the venv's packages are for {sys.version_info[:2]}"
    return None


def _make_user(base: Path, subids: range | None) -> User:
    name = f"pbrl{uuid.uuid4().hex[:10]}"
    home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    # -K ...=0: no automatic ranges from login.defs (SUB_UID_COUNT): this test decides which ranges exist
    subprocess.run(["useradd", "-M", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", "-d", str(home), "-s",
                    "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    entry = pwd.getpwnam(name)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    user = User(name, entry.pw_uid, entry.pw_gid, home, subids)
    if subids is not None:
        span = f"{subids.start}-{subids.stop - 1}"
        subprocess.run(["usermod", "--add-subuids", span, "--add-subgids", span, name], check=True,
                       capture_output=True)
    return user


def _remove_user(user: User) -> None:
    subprocess.run(["userdel", user.name], capture_output=True)
    for path in ("/etc/subuid", "/etc/subgid"):  # userdel removes the ranges; make sure, line by line
        with contextlib.suppress(OSError):
            lines = Path(path).read_text().splitlines(keepends=True)
            if any(line.startswith(f"{user.name}:") for line in lines):
                subprocess.run(["usermod", "--del-subuids" if path.endswith("uid") else "--del-subgids",
                                f"{user.subids.start}-{user.subids.stop - 1}", user.name], capture_output=True)


@pytest.fixture(scope="module")
def users():
    reason = _skip_reasons()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="pybuild-rootless-", dir="/tmp"))
    os.chmod(base, 0o755)
    start = 3_000_000 + (os.getpid() % 4096) * RANGE_COUNT  # away from the usual 100000+ of real users
    made: list[User] = []
    try:
        made.append(_make_user(base, range(start, start + RANGE_COUNT)))
        made.append(_make_user(base, None))
        probe = made[0].pybuild("version", check=False)
        if probe.returncode != 0:
            pytest.skip(f"the test user cannot run this checkout (is {REPO} and the venv readable by all?): "
                        f"{probe.stderr.decode().strip()[-300:]}")
        yield made
    finally:
        for user in made:
            _remove_user(user)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ranged(users) -> User:
    user = users[0]
    ctx = user.home / "busybox-ctx"
    shutil.copytree(TESTDATA / "busybox", ctx)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", ctx / "busybox")
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(ctx)], check=True)
    user.pybuild("build", "-t", "pybuild/busybox", str(ctx))
    return user


def _root_pybuild(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    return subprocess.run([sys.executable, "-m", "builder", *args[:1], "--root", str(root), *args[1:]], env=env,
                          capture_output=True, check=True, cwd=REPO, timeout=600)


def _diff_ids(layout: Path) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
    return json.loads(_blob(layout, manifest["config"]["digest"]).read_text())["rootfs"]["diff_ids"]


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":")[1]


def _last_layer(layout: Path) -> list[tarfile.TarInfo]:
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())
    with tarfile.open(_blob(layout, manifest["layers"][-1]["digest"])) as tar:
        return tar.getmembers()
