"""Fixtures that drive the real `pybuild` command on a throw-away store."""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTDATA = REPO / "testdata"


@dataclass
class Pybuild:
    root: Path

    def __call__(self, *args: str, check: bool = True, input: bytes | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "builder", *_with_root(list(args), self.root)]
        proc = subprocess.run(cmd, capture_output=True, input=input, timeout=timeout, cwd=REPO)
        if check and proc.returncode != 0:
            raise AssertionError(f"pybuild {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout.decode()}\n{proc.stderr.decode()}")
        return proc


def _with_root(args: list[str], root: Path) -> list[str]:
    if "--root" in args:
        return args
    if args and args[0] == "cache" and len(args) > 1:
        return [args[0], args[1], "--root", str(root), *args[2:]]
    if args and args[0] in ("run", "images", "history", "build", "parse", "layers"):
        return [args[0], "--root", str(root), *args[1:]]
    return ["--root", str(root), *args]


def mountinfo(*scopes: Path | str) -> list[str]:
    """Host mounts that this test's own builds could leak, without the per-mount ids, to compare before/after.

    Only mounts that name one of `scopes` (the test's store root, its tmp_path) in their mount point, source or
    options count, plus overlays over /proc/self/fd paths (how pybuild's sandbox and file helper name layer
    directories; no other builder does). Mounts of docker, buildah or another pybuild test run on the same
    machine name none of these, so the comparison speaks only of us."""
    wanted = [str(scope) for scope in scopes]
    ours = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        text = " ".join(line.split()[3:])
        if any(scope in text for scope in wanted) or (" - overlay " in text and "/proc/self/fd/" in text):
            ours.append(text)
    return sorted(ours)


@pytest.fixture(scope="session")
def session_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def pybuild(session_root) -> Pybuild:
    return Pybuild(session_root)


def busybox_context(dest: Path) -> Path:
    shutil.copytree(TESTDATA / "busybox", dest, dirs_exist_ok=True)
    binary = shutil.which("busybox") or "/bin/busybox"
    if not Path(binary).exists():
        pytest.skip("busybox-static is not installed (scripts/setup.sh installs it)")
    shutil.copy2(binary, dest / "busybox")
    return dest


@pytest.fixture(scope="session")
def busybox_image(pybuild, tmp_path_factory) -> str:
    ctx = busybox_context(tmp_path_factory.mktemp("busybox-ctx"))
    pybuild("-t", "pybuild/busybox", str(ctx))
    return "pybuild/busybox"


@pytest.fixture(scope="session")
def app_image(pybuild, busybox_image) -> str:
    pybuild("-f", str(TESTDATA / "app" / "Dockerfile"), "-t", "me/app", str(TESTDATA / "app"))
    return "me/app"
