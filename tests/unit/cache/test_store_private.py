"""The store root is private (0700, as /var/lib/docker): what images carry (setuid-root binaries, device
nodes) is never reachable by another host user through the store's snapshot directories."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from cache import Store, StoreError
from tests.unit.cache.helpers import commit_tree

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def open_dir():
    """A world-traversable directory (pytest's own tmp dirs are 0700 for root, which would hide the store)."""
    d = Path(tempfile.mkdtemp(prefix="pybuild-private-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _as_nobody(script: str) -> subprocess.CompletedProcess:
    """``script`` run by /bin/sh as nobody (a shell, so that every path is looked up with nobody's rights)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    return subprocess.run([*NOBODY, "/bin/sh", "-c", script], capture_output=True, text=True)


def test_a_new_store_root_is_0700(open_dir):
    with Store.open(open_dir / "store") as s:
        st = os.stat(s.root)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()


def test_opening_an_open_store_makes_it_private(open_dir):
    root = open_dir / "store"
    Store.open(root).close()
    os.chmod(root, 0o755)
    Store.open(root).close()
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700


def test_another_user_cannot_reach_setuid_binaries_or_devices_of_a_snapshot(open_dir, needs_root):
    shell = shutil.which("busybox") or "/bin/sh"
    root = open_dir / "store"
    with Store.open(root) as s:
        m = s.prepare(None)
        shutil.copy(shell, m.upper / "sh")
        os.chmod(m.upper / "sh", 0o4755)
        os.mknod(m.upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        snap, _ = s.commit(m)
        assert os.stat(snap.path / "sh").st_mode & stat.S_ISUID
    os.chmod(root, 0o755)  # a store made before this rule, not yet reopened
    with Store.open(root):
        pass
    run = _as_nobody(f"{snap.path / 'sh'} -c 'id -u'")
    assert run.returncode != 0 and "Permission denied" in run.stderr, run
    probe = _as_nobody(f"echo x > {snap.path / 'null'} && ls {snap.path}")
    assert probe.returncode != 0 and "Permission denied" in probe.stderr, probe
    ls = subprocess.run(["ls", "-ld", str(root)], capture_output=True, text=True, check=True).stdout
    assert ls.startswith("drwx------"), ls


def test_a_store_root_made_by_another_user_is_refused(open_dir):
    """Second pass: a root someone else created (in /tmp, say) may hold their open descriptors or planted
    directories; adopting it would hand them the snapshots, so it is refused (as root too)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory owned by another user")
    root = open_dir / "store"
    root.mkdir(mode=0o777)
    os.chown(root, 65534, 65534)
    with pytest.raises(StoreError, match="uid 65534"):
        Store.open(root)


def test_the_layout_below_the_root_is_private_too(open_dir):
    """Second pass: snapshots/ and tmp/ are 0700 as well, so a descriptor of them kept from before is no way in."""
    root = open_dir / "store"
    Store.open(root).close()
    for sub in ("snapshots", "tmp"):
        os.chmod(root / sub, 0o755)
    Store.open(root).close()
    assert [stat.S_IMODE(os.stat(root / sub).st_mode) for sub in ("snapshots", "tmp")] == [0o700, 0o700]


def test_a_symlinked_store_root_still_opens(open_dir):
    (open_dir / "real").mkdir()
    os.symlink(open_dir / "real", open_dir / "link")
    Store.open(open_dir / "link").close()
    assert stat.S_IMODE(os.stat(open_dir / "real").st_mode) == 0o700
