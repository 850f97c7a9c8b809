"""Fixtures for the store tests: a fresh store in tmp_path, tree builders, root checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cache import Store


def _can_trusted_xattr(tmp: Path) -> bool:
    try:
        os.setxattr(tmp, "trusted.pybuild-probe", b"1")
        os.removexattr(tmp, "trusted.pybuild-probe")
        return True
    except OSError:
        return False


@pytest.fixture
def needs_root(tmp_path: Path) -> None:
    """Skip unless we may mknod whiteouts and set trusted.* xattrs (root on a real fs)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mknod of overlay whiteouts and trusted.* xattrs")
    if not _can_trusted_xattr(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} does not support trusted.* xattrs")


@pytest.fixture
def store(tmp_path: Path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def other_store(tmp_path: Path):
    s = Store.open(tmp_path / "other")
    yield s
    s.close()
