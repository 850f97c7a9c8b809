"""A build's pool of prepared network namespaces for RUN's default (bridge) network, as BuildKit's CNI pool.

The threaded builder never forks or unshares (STYLE.md habit 8), and pyroute2's import (~0.15 s) must not be
paid by builds whose RUNs need no network. So the namespaces are made by a helper, `python -m
builder.sandbox.netpool CONTROL_FD`, exec'd (a fresh single-threaded interpreter) at the first RUN of a build
that needs one. Creating a namespace there is plain unshare(CLONE_NEWNET) + setns() back, no fork: pyroute2's
NetNS helpers fork a process per namespace, and `ip netns` bind-mounts it under /run/netns, where a killed
build would leave it behind. Here a namespace is held only by file descriptors (the helper's, then the
container's), so when the last holder dies, even by SIGKILL, the kernel destroys it and with it both ends of
its veth pair: nothing outlives the build. The helper keeps POOL_SIZE namespaces ready, each with `lo` up and
`eth0` (the peer of a veth on the bridge) addressed and routed, so a RUN only receives a descriptor and its init
setns()es into it instead of unsharing CLONE_NEWNET.

Protocol (SOCK_SEQPACKET socketpair; the helper's end is its argv[1]):
  builder → helper  JSON {"subnet": str|null, "size": n} once, then b"get" or JSON {"put": id}
  helper → builder  JSON {"bridge": {"subnet", "gateway"}} once set up, or {"error", "hint"};
                    per get: JSON {"id", "address", "gateway"} + the namespace's fd (SCM_RIGHTS), or {"error"}
  EOF (the builder closed it or died): the helper closes every namespace it holds (the kernel then removes
  them with their veths) and exits.
Addresses are leased across builds with flocks on STATE_DIR/<netns>/leases/<address>, held while in use.
"""
from __future__ import annotations

import fcntl
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass

from builder.sandbox import syscalls as sc

POOL_SIZE = 2
CLOSE_WAIT = 0.02
# Filling the pool at full priority right after a build's first RUN started delayed that build's reaction to
# Ctrl-C by 0.3-0.9 s on a loaded 2-core machine (tests/integration/test_cancel.py); niced, it does not.
NICENESS = 10


class PoolError(Exception):
    """The bridge network cannot be given to RUN: what failed (the message) and how to do without (hint)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Lease:
    """A prepared namespace for one RUN: the descriptor to setns() into, its address and gateway."""

    id: int
    fd: int
    address: str
    gateway: str


class NetworkPool:
    """The builder's side: start() early, acquire() per RUN, release() after it, close() at the build's end.
    Thread-safe; nothing here imports pyroute2."""

    def __init__(self, subnet: str | None = None, env: dict[str, str] | None = None, size: int = POOL_SIZE) -> None:
        self.subnet = subnet
        self.env = env
        self.size = size
        self.gateway: str | None = None
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._error: PoolError | None = None

    def start(self) -> None:
        """Start the helper (it sets up the bridge and fills the pool while the build goes on); idempotent."""
        with self._lock:
            if self._control is not None or self._error is not None:
                return
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "builder.sandbox.netpool", str(theirs.fileno())], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, close_fds=True, pass_fds=(theirs.fileno(),), env=self.env)
            except OSError as exc:
                mine.close()
                self._error = PoolError(f"starting the network helper: {exc.strerror or exc}")
                return
            finally:
                theirs.close()
            mine.send(json.dumps({"subnet": self.subnet, "size": self.size}).encode())
            self._control = mine

    def _ready(self) -> socket.socket:
        """The control socket once the bridge is set up (call with the lock held, after start())."""
        if self._error is not None:
            raise self._error
        assert self._control is not None
        if self.gateway is None:
            reply = _receive(self._control)[0]
            if "error" in reply:
                self._error = PoolError(reply["error"], reply.get("hint", ""))
                raise self._error
            self.gateway = reply["bridge"]["gateway"]
        return self._control

    def gateway_address(self) -> str:
        """The bridge's own address (what --add-host NAME:host-gateway means); PoolError if there is no bridge."""
        self.start()
        with self._lock:
            self._ready()
        assert self.gateway is not None
        return self.gateway

    def acquire(self) -> Lease:
        """A prepared namespace (blocks until the helper has one); PoolError when none can be had."""
        self.start()
        with self._lock:
            control = self._ready()
            control.send(b"get")
            reply, fds = _receive(control)
        if "error" in reply:
            raise PoolError(reply["error"], reply.get("hint", ""))
        return Lease(reply["id"], fds[0], reply["address"], reply["gateway"])

    def release(self, lease: Lease) -> None:
        """Close the RUN's descriptor and have the helper drop the namespace (and its veth) and free its address."""
        os.close(lease.fd)
        with self._lock:
            if self._control is not None:
                try:
                    self._control.send(json.dumps({"put": lease.id}).encode())
                except OSError:
                    pass  # the helper is gone: the kernel has already taken the namespace down

    def close(self) -> None:
        """Stop the helper; idempotent. It frees what it made and exits on its own at EOF: its namespaces go
        with their descriptors, so there is nothing to wait for (its interpreter's exit took 0.1-0.2 s)."""
        with self._lock:
            control, proc, self._control, self._proc = self._control, self._proc, None, None
        if control is not None:
            control.close()
        if proc is not None:
            try:
                proc.wait(CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                pass  # still exiting; subprocess reaps it later


def _receive(sock: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(sock, 65536, 1)
    if not data:
        return {"error": "the network helper exited unexpectedly"}, []
    return json.loads(data), fds


# --- the helper ----------------------------------------------------------------------------------------------

class _Helper:
    """Makes and hands out namespaces; single-threaded (run as its own process)."""

    def __init__(self, control: socket.socket, subnet: str | None, size: int) -> None:
        from builder.sandbox import bridge  # pyroute2: only in this process; lazy: saves ~116 ms at start-up

        self.bridge_mod = bridge
        self.control = control
        self.size = size
        # Held before the bridge is looked at: `network prune` removes nothing while any build holds it.
        self.inuse = bridge.locked("inuse", fcntl.LOCK_SH)
        self.bridge = bridge.ensure_bridge(subnet)
        self.ipr = bridge.IPRoute()
        self.bridge_index = self.ipr.link_lookup(ifname=bridge.BRIDGE)[0]
        self.host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.ready: list[dict] = []
        # One namespace ahead until the build asks for a second: a build's first RUN competed with filling a
        # pool of two for the CPU (Ctrl-C during it took over 1 s under load); builds of one RUN never need it.
        self.wanted = min(1, size)
        self.gets = 0
        self.given: dict[int, dict] = {}
        self.next_id = 0

    def serve(self) -> None:
        gateway = str(self.bridge.gateway)
        self.control.send(json.dumps({"bridge": {"subnet": str(self.bridge.subnet), "gateway": gateway}}).encode())
        while True:
            self._fill()
            data = self.control.recv(65536)
            if not data:
                return
            if data == b"get":
                self._give()
            else:
                self._drop(self.given.pop(json.loads(data)["put"], None))

    def _fill(self) -> None:
        """Top the pool up, unless a request is already waiting (it comes first)."""
        while len(self.ready) < self.wanted:
            waiting, _, _ = select.select([self.control], [], [], 0)
            if waiting:
                return
            try:
                self.ready.append(self._prepare())
            except self.bridge_mod.NetworkSetupError:
                return  # reported to the next get, which tries again

    def _give(self) -> None:
        try:
            entry = self.ready.pop(0) if self.ready else self._prepare()
        except self.bridge_mod.NetworkSetupError as exc:
            self.control.send(json.dumps({"error": str(exc), "hint": exc.hint}).encode())
            return
        self.given[entry["id"]] = entry
        self.gets += 1
        if self.gets >= 2:
            self.wanted = self.size
        reply = {"id": entry["id"], "address": entry["address"], "gateway": str(self.bridge.gateway)}
        socket.send_fds(self.control, [json.dumps(reply).encode()], [entry["fd"]])

    def _prepare(self) -> dict:
        """A new namespace: lo up, eth0 (peer of a veth on the bridge) with a leased address and default route."""
        address, lease = self._lease()
        self.next_id += 1
        veth = f"pb{os.getpid() % 0x10000:04x}{self.next_id % 0x10000:04x}"
        entry = {"id": self.next_id, "address": address, "lease": lease, "veth": veth, "fd": -1}
        try:
            sc.unshare(sc.CLONE_NEWNET)
            try:
                entry["fd"] = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                inner = self.bridge_mod.IPRoute()  # its socket stays in the new namespace
            finally:
                sc.setns(self.host_ns, sc.CLONE_NEWNET)
            with inner:
                self.ipr.link("add", ifname=veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": entry["fd"]})
                index = self.ipr.link_lookup(ifname=veth)[0]
                self.ipr.link("set", index=index, master=self.bridge_index, state="up")
                inner.link("set", index=inner.link_lookup(ifname="lo")[0], state="up")
                eth0 = inner.link_lookup(ifname="eth0")[0]
                inner.addr("add", index=eth0, address=address, prefixlen=self.bridge.subnet.prefixlen)
                inner.link("set", index=eth0, state="up")
                inner.route("add", dst="0.0.0.0/0", gateway=str(self.bridge.gateway))
        except Exception as exc:  # noqa: BLE001 - nothing half-made stays: drop what exists, say what failed
            self._drop(entry)
            if isinstance(exc, self.bridge_mod.NetworkSetupError):
                raise
            raise self.bridge_mod.NetworkSetupError(f"preparing a network namespace for RUN: {exc}") from None
        return entry

    def _lease(self) -> tuple[str, int]:
        """A free address of the subnet, held by a flock on its lease file."""
        subnet = self.bridge.subnet
        count = subnet.num_addresses - 2
        directory = os.path.join(self.bridge_mod.state_dir(), "leases")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        start = random.randrange(count)
        for step in range(min(count, 4096)):
            address = subnet.network_address + 1 + (start + step) % count
            if address == self.bridge.gateway:
                continue
            path = os.path.join(directory, str(address))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino != os.stat(path).st_ino:  # its holder unlinked it as we opened it
                    raise BlockingIOError
            except (BlockingIOError, FileNotFoundError):
                os.close(fd)
                continue
            return str(address), fd
        raise self.bridge_mod.NetworkSetupError(
            f"no free address in the bridge subnet {subnet}: running builds hold them all",
            hint="wait for other builds to finish, or give a larger one with --bridge-subnet (after "
                 "`pybuild network prune`)")

    def _drop(self, entry: dict | None) -> None:
        """Free the namespace and the address. No RTM_DELLINK: closing the namespace's last descriptor has the
        kernel destroy it, and its veth pair with it, in the background (deleting the veth here took 10-20 ms
        of the helper's time, during which the next RUN's request waited)."""
        if entry is None:
            return
        if entry["fd"] >= 0:
            os.close(entry["fd"])
        try:  # unlinked before the lock goes: a lease file exists only while it is held (see _lease)
            os.unlink(os.path.join(self.bridge_mod.state_dir(), "leases", entry["address"]))
        except FileNotFoundError:
            pass
        os.close(entry["lease"])

    def close(self) -> None:
        """Drop every namespace, handed out or not (the builder has stopped using them)."""
        for entry in [*self.ready, *self.given.values()]:
            self._drop(entry)
        self.ipr.close()


def main(argv: list[str]) -> None:
    """The helper: set up the bridge, report, serve gets and puts until EOF, then clean up."""
    control = socket.socket(fileno=int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the builder's to handle
    os.nice(NICENESS)  # it works ahead, in the background: the steps that run meanwhile come first
    request = json.loads(control.recv(65536) or b"{}")
    try:
        helper = _Helper(control, request.get("subnet"), int(request.get("size", POOL_SIZE)))
    except Exception as exc:  # noqa: BLE001 - one line for the user
        hint = getattr(exc, "hint", "build with --network none (no network) or --network host")
        try:
            control.send(json.dumps({"error": f"setting up the bridge network: {exc}", "hint": hint}).encode())
        except OSError:
            pass  # the builder is gone
        return
    try:
        helper.serve()
    except (BrokenPipeError, ConnectionError):
        pass  # the builder stopped (a failed or cancelled build): nothing to tell it
    finally:
        helper.close()


if __name__ == "__main__":
    main(sys.argv[1:])
