"""`pybuild network prune` removes the state directories (/run/pybuild/network/<netns inode>: locks and address
leases) of network namespaces that are gone, and never one of a namespace that still exists: in it a process, held
only by a descriptor, or bind-mounted by `ip netns add`. Every namespace here is the test's own (unshare, ip
netns); prune always runs inside a new namespace of the test's, so the host's bridge is never touched."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.sandbox.netstate import live_net_namespaces
from tests.conftest import REPO, require_tool

STATE = Path("/run/pybuild/network")
PRUNE = [sys.executable, "-m", "builder", "network", "prune"]
SYNTHETIC = "4294967290"  # a namespace inode no namespace has (they count up from 4026531840)


def run(*argv: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
    return done.stdout


def holder() -> tuple[subprocess.Popen, str]:
    """A process in a new network namespace of its own; (process, the namespace's inode)."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    ours = os.stat("/proc/self/ns/net").st_ino
    while (inode := os.stat(f"/proc/{proc.pid}/ns/net").st_ino) == ours:  # unshare has not run yet
        time.sleep(0.01)
    return proc, str(inode)


def prune_in_new_namespace() -> str:
    """`pybuild network prune` run in a namespace made for it (which is gone once it has run)."""
    return run("unshare", "--net", *PRUNE)


@pytest.fixture
def namespaces():
    """Namespaces the test makes, closed at its end; the state they leave is removed by a last prune."""
    require_tool("unshare")
    require_tool("nsenter")
    require_tool("ip")
    made: dict = {"procs": [], "fds": [], "netns": []}
    yield made
    for proc in made["procs"]:
        proc.kill()
        proc.wait()
    for fd in made["fds"]:
        os.close(fd)
    for name in made["netns"]:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    prune_in_new_namespace()


def test_live_namespaces_are_those_a_process_a_descriptor_or_a_bind_mount_holds(namespaces):
    in_process, by_process = holder()
    namespaces["procs"].append(in_process)
    held, by_fd = holder()
    fd = os.open(f"/proc/{held.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    namespaces["fds"].append(fd)
    held.kill()
    held.wait()  # now only this test's descriptor holds that namespace
    name = f"pybuild-test-{os.getpid()}"
    run("ip", "netns", "add", name)
    namespaces["netns"].append(name)
    by_mount = str(os.stat(f"/run/netns/{name}").st_ino)
    live = live_net_namespaces()
    assert {int(by_process), int(by_fd), int(by_mount), os.stat("/proc/self/ns/net").st_ino} <= live
    assert int(SYNTHETIC) not in live


@pytest.mark.slow
def test_prune_removes_the_state_of_gone_namespaces_and_keeps_the_live_ones(namespaces):
    gone = run("unshare", "--net", "sh", "-c", f"stat -L -c %i /proc/self/ns/net; exec {' '.join(PRUNE)}")
    gone = gone.split()[0]
    in_process, by_process = holder()
    namespaces["procs"].append(in_process)
    run("nsenter", f"--net=/proc/{in_process.pid}/ns/net", *PRUNE)
    held, by_fd = holder()
    run("nsenter", f"--net=/proc/{held.pid}/ns/net", *PRUNE)
    namespaces["fds"].append(os.open(f"/proc/{held.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC))
    held.kill()
    held.wait()
    name = f"pybuild-test-{os.getpid()}"
    run("ip", "netns", "add", name)
    namespaces["netns"].append(name)
    by_mount = str(os.stat(f"/run/netns/{name}").st_ino)
    run("ip", "netns", "exec", name, *PRUNE)
    for inode in (gone, by_process, by_fd, by_mount):
        assert (STATE / inode / "inuse").exists(), inode  # each prune left its namespace's state
    out = prune_in_new_namespace()
    left = set(os.listdir(STATE))
    assert {by_process, by_fd, by_mount} <= left, out
    # The gone namespace's inode may already name a new namespace (the kernel reuses them): then it is kept.
    assert gone not in left or int(gone) in live_net_namespaces(), out
    assert gone in out or int(gone) in live_net_namespaces(), out


@pytest.mark.slow
def test_prune_keeps_a_directory_whose_inuse_lock_a_build_holds(namespaces):
    """Whatever the scan of /proc says (a namespace another PID namespace's processes reach looks gone)."""
    (STATE / SYNTHETIC).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(STATE / SYNTHETIC / "inuse", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # as a running build's pool helper holds it
            out = prune_in_new_namespace()
            assert (STATE / SYNTHETIC / "inuse").exists() and SYNTHETIC not in out, out
        finally:
            os.close(fd)
        out = prune_in_new_namespace()
        assert not (STATE / SYNTHETIC).exists() and SYNTHETIC in out, out
    finally:
        subprocess.run(["rm", "-rf", str(STATE / SYNTHETIC)])
