"""Rootless RUN's default network: one network namespace per build, connected by slirp4netns (user-mode TCP/IP).

Without root on the host no bridge or veth can be made, so rootless mode does as rootless BuildKit does (its RUNs
share rootlesskit's slirp4netns namespace): a holder process unshares a network namespace inside pybuild's user
namespace, `slirp4netns --configure` gives it `tap0` (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) with NAT
through the host's sockets, and every RUN on the default network setns()es into it (the same `netns_fd` path as
a bridge lease, builder/sandbox/netpool.py). `--disable-host-loopback`: a RUN cannot reach the host's 127.0.0.1.
slirp4netns rather than pasta: Debian 12 ships both, slirp4netns is what rootless podman and BuildKit default to
there, and its `--ready-fd`/`--exit-fd` give a start and an end without polling or signals.
The holder and slirp4netns die with the build: close() ends them, and both die with this process otherwise
(the holder reads EOF on its stdin; slirp4netns' exit-fd closes).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

ADDRESS = "10.0.2.100"
GATEWAY = "10.0.2.2"
HOLDER = """
import ctypes, fcntl, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.unshare.argtypes, libc.unshare.restype = [ctypes.c_int], ctypes.c_int
if libc.unshare(0x40000000) != 0:
    sys.exit("unshare(CLONE_NEWNET): " + os.strerror(ctypes.get_errno()))
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
"""


class SlirpError(Exception):
    """slirp4netns could not be started; the message is one line."""


@dataclass(frozen=True, slots=True)
class Lease:
    """What exec._network takes from a bridge lease: the namespace's descriptor and the RUN's addresses."""

    fd: int
    address: str = ADDRESS
    gateway: str = GATEWAY


def available() -> bool:
    """Is slirp4netns installed?"""
    return shutil.which("slirp4netns") is not None


class SlirpNetwork:
    """The build's user-mode network; acquire/release/gateway_address/close as a NetworkPool's."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                                       start_new_session=True)  # a terminal's ^C is the build's to handle
        assert self.holder.stdin and self.holder.stdout and self.holder.stderr  # all three are pipes
        self.slirp: subprocess.Popen | None = None
        self.exit_w = -1
        self.fd = -1
        try:
            if self.holder.stdout.readline() != b"ready\n":
                raise SlirpError(f"the network namespace holder failed: {self.holder.stderr.read().decode().strip()}")
            self.fd = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            self._start_slirp()
        except BaseException:
            self.close()
            raise

    def _start_slirp(self) -> None:
        ready_r, ready_w = os.pipe()
        exit_r, self.exit_w = os.pipe()
        try:
            self.slirp = subprocess.Popen(
                ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback", f"--ready-fd={ready_w}",
                 f"--exit-fd={exit_r}", str(self.holder.pid), "tap0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(ready_w, exit_r), start_new_session=True)
        except OSError as exc:
            os.close(ready_r)
            raise SlirpError(f"starting slirp4netns: {exc.strerror}") from exc
        finally:
            os.close(ready_w)
            os.close(exit_r)
        with os.fdopen(ready_r, "rb") as ready:
            if ready.read(1) != b"1":
                assert self.slirp.stderr is not None  # stderr=PIPE
                self.slirp.wait()
                raise SlirpError(f"slirp4netns failed: {self.slirp.stderr.read().decode().strip()[-300:]}")

    def acquire(self) -> Lease:
        return Lease(self.fd)

    def release(self, lease: Lease) -> None:
        """Nothing to give back: every RUN of the build shares the namespace (as rootless BuildKit's do)."""

    def gateway_address(self) -> str:
        return GATEWAY

    def close(self) -> None:
        """End slirp4netns and the holder (the namespace goes with its last process and descriptor)."""
        if self.exit_w >= 0:
            os.close(self.exit_w)
            self.exit_w = -1
        if self.slirp is not None:
            assert self.slirp.stderr is not None  # stderr=PIPE
            self.slirp.wait()
            self.slirp.stderr.close()
        assert self.holder.stdin and self.holder.stdout and self.holder.stderr  # all three are pipes
        self.holder.stdin.close()  # EOF: the holder exits
        self.holder.wait()
        for stream in (self.holder.stdout, self.holder.stderr):
            stream.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
