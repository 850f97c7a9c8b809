"""Test layout: tests/unit (pure, no root) and tests/integration (root, namespaces, overlayfs, real tools).

Tests are marked by directory (pip's conftest habit): everything under integration/ gets the `root` mark and is
skipped with a reason where the machine cannot run it. A unit test may not use the integration fixtures.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

try:  # CI (CI=true) replays the same hypothesis examples every run: a red CI is a real regression, never luck
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


CLONE_NEWNET = 0x40000000


def _private_network() -> None:
    """Move this pytest process (and so every build it starts) into a network namespace of its own.

    Builds give RUN a bridge with NAT by default, which configures the network namespace pybuild runs in: the
    suite must never do that to the machine's real one. Called while pytest is still single-threaded
    (unshare(CLONE_NEWNET) moves only the calling thread; threads and processes started later follow it).
    Python 3.11 has no os.unshare, hence ctypes. The namespace, with every bridge and nftables rule made in it,
    vanishes with the session."""
    import ctypes
    import fcntl
    import socket
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(CLONE_NEWNET)) != 0:
        errno = ctypes.get_errno()
        raise pytest.UsageError(f"cannot give the test session a private network namespace: {os.strerror(errno)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # bring lo up (SIOCGIFFLAGS/SIOCSIFFLAGS)
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, 0x8913, request))[1]
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))


def pytest_configure(config):
    if os.geteuid() == 0:
        _private_network()


def overlay_available() -> bool:
    try:
        return "overlay" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    reason = None
    if os.geteuid() != 0:
        reason = "needs root (namespaces, overlayfs)"
    elif not overlay_available():
        reason = "the kernel has no overlayfs"
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.root)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
        elif "unit" in path.parts:
            used = set(getattr(item, "fixturenames", ()))
            if used & {"pybuild", "busybox_image", "app_image"}:
                raise pytest.UsageError(f"{item.nodeid}: unit tests may not use integration fixtures")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (the repository's sibling directory ../shared)")
    return SHARED


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh test installs it)")
    return path
