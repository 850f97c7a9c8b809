"""RUN's default network (a bridge with NAT, builder/sandbox/bridge.py and netpool.py), end to end.

Every test makes a network namespace of its own (a `unshare --net sleep` holder), gives it an interface
with 10.123.0.1/24 and runs pybuild *inside* it (nsenter), so the bridge, its subnet, the NAT rule and the test's
HTTP server (bound to 10.123.0.1 from a thread that setns()es into the namespace) all live there and vanish with
it. No traffic leaves the machine.
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool
from tests.httpserve import Handler

pytestmark = pytest.mark.slow
SERVER = "10.123.0.1"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Netns:
    holder: subprocess.Popen
    root: Path

    @property
    def path(self) -> str:
        return f"/proc/{self.holder.pid}/ns/net"

    def run(self, *argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(["nsenter", f"--net={self.path}", *argv], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def pybuild(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "builder", args[0], "--root", str(self.root), *args[1:], check=check)

    def popen_pybuild(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(["nsenter", f"--net={self.path}", sys.executable, "-m", "builder", args[0], "--root",
                                 str(self.root), *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO)

    def links(self) -> list[str]:
        return [line.split(":")[1].strip().split("@")[0] for line in self.run("ip", "-o", "link").stdout.splitlines()]

    def bridge_subnet(self) -> ipaddress.IPv4Network:
        fields = self.run("ip", "-o", "-4", "addr", "show", "dev", "pybuild0").stdout.split()
        return ipaddress.ip_interface(fields[fields.index("inet") + 1]).network

    def nft_rules(self) -> dict[str, int]:
        """nftables table name → number of rules, read through netlink (pyroute2) inside the namespace."""
        probe = ("import json; from pyroute2.nftables.main import NFTables\n"
                 "with NFTables(nfgen_family=2) as n:\n"
                 "    t = [x.get_attr('NFTA_TABLE_NAME') for x in n.get_tables()]\n"
                 "    r = [x.get_attr('NFTA_RULE_TABLE') for x in n.get_rules()]\n"
                 "print(json.dumps({name: r.count(name) for name in t}))")
        return json.loads(self.run(sys.executable, "-c", probe).stdout)

    def settled(self, expected: set[str], seconds: float = 10.0) -> list[str]:
        """The links once only `expected` are left (the kernel removes a dead namespace's veths in the
        background), or what is there after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            links = self.links()
            if set(links) == expected or time.monotonic() > deadline:
                return links
            time.sleep(0.1)


@pytest.fixture
def netns(pybuild, busybox_image, session_root):
    """A private network namespace with lo up and srv0 = 10.123.0.1/24; pybuild runs use the session store."""
    require_tool("nsenter")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    try:
        ours = os.stat("/proc/self/ns/net").st_ino
        while os.stat(f"/proc/{holder.pid}/ns/net").st_ino == ours:  # unshare has not run yet
            time.sleep(0.01)
        ns = Netns(holder, session_root)
        ns.run("ip", "link", "set", "lo", "up")
        # The kernel here has no dummy interfaces: a veth pair with both ends in the namespace stands in.
        ns.run("ip", "link", "add", "srv0", "type", "veth", "peer", "name", "srv1")
        ns.run("ip", "addr", "add", f"{SERVER}/24", "dev", "srv0")
        ns.run("ip", "link", "set", "srv0", "up")
        ns.run("ip", "link", "set", "srv1", "up")
        yield ns
    finally:
        holder.kill()
        holder.wait()


class Hello(Handler):
    def do_GET(self):
        self.reply(200, b"hello from the test's server\n")


@contextmanager
def server_in(ns: Netns):
    """An HTTP server on SERVER:PORT inside `ns`: its socket is made by a thread that setns()es there."""
    from http.server import ThreadingHTTPServer

    made: dict = {}
    ready = threading.Event()

    def serve() -> None:
        try:
            fd = os.open(ns.path, os.O_RDONLY)
            if _libc.setns(fd, CLONE_NEWNET) != 0:  # this thread only
                raise OSError(ctypes.get_errno(), "setns")
            os.close(fd)
            made["server"] = ThreadingHTTPServer((SERVER, 0), Hello)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            made["error"] = exc
            return
        finally:
            ready.set()
        made["server"].serve_forever(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in made:
        raise made["error"]
    try:
        yield made["server"].server_address[1]
    finally:
        made["server"].shutdown()
        made["server"].server_close()
        thread.join(10)


def _context(tmp_path: Path, name: str, dockerfile: str) -> Path:
    ctx = tmp_path / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def _interfaces(ip_addr: str) -> dict[str, list[str]]:
    """busybox `ip -o addr` → interface → its IPv4 addresses."""
    found: dict[str, list[str]] = {}
    for line in ip_addr.splitlines():
        fields = line.split()
        if len(fields) > 3:
            found.setdefault(fields[1], [])
            if fields[2] == "inet":
                found[fields[1]].append(fields[3])
    return found


def _held(leases: Path) -> list[str]:
    """Addresses whose lease file someone holds a lock on (a namespace's inode number can be a dead one's
    again, so files a killed build left may be there, unlocked)."""
    import fcntl

    held = []
    for path in leases.iterdir() if leases.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(path.name)
        finally:
            os.close(fd)
    return held


def _read(ns: Netns, image: str, path: str) -> str:
    return ns.pybuild("run", image, "cat", path).stdout


def test_default_network_fetches_from_a_server_by_name_on_a_bridge(netns, tmp_path):
    # busybox is static: its resolver cannot use /etc/hosts through NSS, so the RUN looks the name up itself.
    lookup = "$(awk '$2 == \"files\" {print $1}' /etc/hosts)"
    with server_in(netns) as port:
        ctx = _context(tmp_path, "fetch", "FROM pybuild/busybox\nRUN ip -o addr > /addr; cat /etc/hosts > /hosts; "
                                          f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {lookup} {port} > /got\n")
        netns.pybuild("build", "-t", "net/fetch", "--no-cache", "--add-host", f"files:{SERVER}", str(ctx))
    assert "hello from the test's server" in _read(netns, "net/fetch", "/got")
    subnet = netns.bridge_subnet()
    interfaces = _interfaces(_read(netns, "net/fetch", "/addr"))
    assert sorted(interfaces) == ["eth0", "lo"]
    assert len(interfaces["eth0"]) == 1 and ipaddress.ip_interface(interfaces["eth0"][0]).ip in subnet
    hosts = _read(netns, "net/fetch", "/hosts").splitlines()
    own = ipaddress.ip_interface(interfaces["eth0"][0]).ip
    assert hosts[-2:] == [f"{SERVER}\tfiles", f"{own}\tbuildkitsandbox"]  # docker's order: extra hosts, then self
    # What stays: the bridge and the one NAT rule; every veth went with its namespace.
    assert sorted(netns.settled({"lo", "srv0", "srv1", "pybuild0"})) == ["lo", "pybuild0", "srv0", "srv1"]
    assert netns.nft_rules() == {"pybuild": 1}


def test_concurrent_builds_get_different_addresses_and_leave_nothing(netns, tmp_path):
    builds = []
    for n in range(2):
        ctx = _context(tmp_path, f"c{n}", f"FROM pybuild/busybox\nRUN echo {n}; ip -o -4 addr show eth0 > /addr; "
                                          "sleep 2\n")
        builds.append((f"net/c{n}", netns.popen_pybuild("build", "-t", f"net/c{n}", "--no-cache", str(ctx))))
    for _, proc in builds:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    leases = Path("/run/pybuild/network", str(os.stat(netns.path).st_ino), "leases")
    deadline = time.monotonic() + 120  # the pool helpers exit on their own once their builds have closed them
    while _held(leases) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _held(leases) == []  # every address is free again
    addresses = {_read(netns, image, "/addr").split()[3] for image, _ in builds}
    assert len(addresses) == 2
    assert all(ipaddress.ip_interface(a).ip in netns.bridge_subnet() for a in addresses)
    assert sorted(netns.settled({"lo", "srv0", "srv1", "pybuild0"})) == ["lo", "pybuild0", "srv0", "srv1"]
    assert netns.nft_rules() == {"pybuild": 1}


def test_none_has_only_loopback_and_host_sees_the_namespaces_interfaces(netns, tmp_path):
    ctx = _context(tmp_path, "modes", "FROM pybuild/busybox\nRUN ip -o addr > /addr\n")
    netns.pybuild("build", "-t", "net/none", "--network", "none", str(ctx))
    assert sorted(_interfaces(_read(netns, "net/none", "/addr"))) == ["lo"]
    netns.pybuild("build", "-t", "net/host", "--network", "host", str(ctx))
    interfaces = _interfaces(_read(netns, "net/host", "/addr"))
    assert "srv0" in interfaces and f"{SERVER}/24" in interfaces["srv0"]
    assert "pybuild0" not in netns.links()  # neither mode needs the bridge


def test_cached_rebuild_is_all_cached_and_never_loads_pyroute2(netns, tmp_path):
    ctx = _context(tmp_path, "cached", "FROM pybuild/busybox\nRUN echo one > /one\nRUN echo two > /two\n")
    netns.pybuild("build", "-t", "net/cached", str(ctx))
    probe = ("import sys; from builder.cli import main\n"
             f"code = main(['build', '--root', {str(netns.root)!r}, '--progress', 'rawjson', {str(ctx)!r}])\n"
             "print('LOADED', sorted(m for m in sys.modules if m.startswith(('pyroute2', 'builder.sandbox'))))\n"
             "sys.exit(code)")
    proc = netns.run(sys.executable, "-c", probe)
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    kinds = [e["type"] for e in events]
    assert kinds.count("StepCached") == 3 and "StepDone" not in kinds, proc.stderr
    loaded = proc.stdout.split("LOADED", 1)[1]
    assert "pyroute2" not in loaded and "netpool" not in loaded and "bridge" not in loaded


def test_killed_build_leaves_no_veth_or_namespace(netns, tmp_path):
    ctx = _context(tmp_path, "killed", "FROM pybuild/busybox\nRUN echo started; sleep 60\n")
    proc = netns.popen_pybuild("build", "--no-cache", "--progress", "plain", str(ctx))
    deadline = time.monotonic() + 120
    while not any(link.startswith("pb") and link != "pybuild0" for link in netns.links()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(0.5)  # the RUN is inside its namespace by now
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert sorted(netns.settled({"lo", "srv0", "srv1", "pybuild0"}, 30)) == ["lo", "pybuild0", "srv0", "srv1"]
    # `network prune` removes what is left for good: the bridge and the NAT table.
    out = netns.run(sys.executable, "-m", "builder", "network", "prune").stdout
    assert "pybuild0" in out
    assert sorted(netns.links()) == ["lo", "srv0", "srv1"] and netns.nft_rules() == {}


def test_proxy_build_args_reach_run_but_not_the_key_or_history(netns, tmp_path):
    ctx = _context(tmp_path, "proxy", "FROM pybuild/busybox\nRUN echo \"proxy=$HTTP_PROXY\" > /p\n")
    netns.pybuild("build", "-t", "net/proxy", "--no-cache", "--build-arg", "HTTP_PROXY=http://proxy.test:3128",
                  str(ctx))
    assert _read(netns, "net/proxy", "/p") == "proxy=http://proxy.test:3128\n"
    assert "proxy.test" not in netns.pybuild("history", "net/proxy").stdout
    again = netns.pybuild("build", "--progress", "plain", "-t", "net/proxy2", str(ctx))  # no proxy: same key
    assert "CACHED" in again.stderr + again.stdout


def test_add_host_gateway_is_the_bridges_address(netns, tmp_path):
    ctx = _context(tmp_path, "gw", "FROM pybuild/busybox\nRUN grep -w gw /etc/hosts > /gw\n")
    netns.pybuild("build", "-t", "net/gw", "--no-cache", "--add-host", "gw:host-gateway", str(ctx))
    gateway = next(netns.bridge_subnet().hosts())
    assert _read(netns, "net/gw", "/gw") == f"{gateway}\tgw\n"


def test_a_clashing_subnet_is_one_clear_error_and_leaves_nothing(netns, tmp_path):
    ctx = _context(tmp_path, "clash", "FROM pybuild/busybox\nRUN true\n")
    proc = netns.pybuild("build", "--no-cache", "--bridge-subnet", "10.123.0.0/16", str(ctx), check=False)
    assert proc.returncode == 1
    assert "10.123.0.0/16 overlaps the host's route to 10.123.0.0/24" in proc.stderr
    assert "--network none" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(netns.links()) == ["lo", "srv0", "srv1"] and netns.nft_rules() == {}


def test_no_permission_for_the_bridge_is_one_clear_error(netns, tmp_path):
    """In a user namespace, root lacks CAP_NET_ADMIN over the (outer) network namespace."""
    ctx = _context(tmp_path, "eperm", "FROM pybuild/busybox\nRUN true\n")
    proc = netns.run("unshare", "--user", "--map-root-user", sys.executable, "-m", "builder", "build", "--root",
                     str(netns.root), "--no-cache", str(ctx), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "creating bridge pybuild0: permission denied" in proc.stderr and "--network none" in proc.stderr
    assert "Traceback" not in proc.stderr and sorted(netns.links()) == ["lo", "srv0", "srv1"]
