"""The host side of RUN's default network: the `pybuild0` bridge, its subnet and the NAT rule (pyroute2).

What a build leaves configured in the network namespace it runs in (documented in README, removed by
`pybuild network prune`, which also removes the state directories of namespaces that are gone, netstate.py):
  - the bridge `pybuild0` with the subnet's first address (the containers' gateway), up;
  - net.ipv4.ip_forward = 1, as docker sets it;
  - the nftables table `ip pybuild` with one chain, `postrouting` (type nat, hook postrouting, priority
    srcnat), holding one rule: `ip saddr SUBNET oifname != "pybuild0" masquerade`.
The rule is made through netlink with pyroute2's NFTables (nf_tables speaks netlink; no `nft` binary, no
subprocess). pyroute2's own `ipv4addr()` helper packs prefix masks in host byte order (wrong for prefixes that
are not whole octets), so the expressions are assembled here with its `genex`.

Per-RUN state lives in the pool (netpool.py): a veth pair whose peer is in a namespace only file descriptors
hold, so the kernel removes both ends when the namespace's last holder goes, even after SIGKILL.
Everything is set up under an exclusive lock on STATE_DIR/<netns>/lock, so concurrent builds agree.
Only the pool helper and `network prune` import this module: pyroute2 costs ~0.2 s to import.
"""
from __future__ import annotations

import errno
import fcntl
import importlib.util
import ipaddress
import os
import socket
import struct
import sys
import types
from dataclasses import dataclass

from builder.sandbox import netstate


def _import_netlink_parts() -> None:
    """pyroute2's package __init__ imports every module it has (165 modules; 104 are needed here): with a bare
    package module in its place the helper starts 25-35% sooner (0.45-0.87 s against 0.70-1.08 s on this
    loaded machine; the first RUN of every build waits for it). Any other pyroute2 gets the ordinary import."""
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations:
            package = types.ModuleType("pyroute2")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            sys.modules["pyroute2"] = package
    try:
        import pyroute2.iproute.linux  # noqa: F401; lazy: saves <1 ms at start-up (its modules are loaded by then)
        import pyroute2.nftables.main  # noqa: F401
    except ImportError:
        for name in [m for m in sys.modules if m == "pyroute2" or m.startswith("pyroute2.")]:
            del sys.modules[name]
        import pyroute2  # noqa: F401; lazy: saves <1 ms at start-up (its modules are loaded by then)


_import_netlink_parts()
from pyroute2.iproute.linux import IPRoute  # noqa: E402 - after the lean import above
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.nftables.expressions import genex  # noqa: E402
from pyroute2.nftables.main import NFTables  # noqa: E402

BRIDGE = "pybuild0"
NFT_TABLE = "pybuild"
NFT_CHAIN = "postrouting"
STATE_DIR = "/run/pybuild/network"
# docker's default address pools (libnetwork ipamutils): 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
DEFAULT_POOLS = ([f"172.{n}.0.0/16" for n in range(17, 32)]
                 + [f"192.168.{n}.0/20" for n in range(0, 256, 16)])
NFPROTO_IPV4 = 2
NF_SRCNAT_PRIORITY = 100
NFT_CMP_NEQ = 1
PRUNE_WAIT = 5.0  # seconds: the pool helper of a build that just ended (or was killed) is still exiting


class NetworkSetupError(Exception):
    """The bridge network cannot be set up; the message says what failed, `hint` how to do without it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint or "build with --network none (no network) or --network host (the host's network)"


@dataclass(frozen=True, slots=True)
class Bridge:
    """The bridge as configured: its subnet and gateway (the bridge's own address)."""

    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address


def state_dir() -> str:
    """This network namespace's directory of locks and leases (namespaces do not share addresses)."""
    return os.path.join(STATE_DIR, str(os.stat("/proc/self/ns/net").st_ino))


def locked(name: str, mode: int = fcntl.LOCK_EX) -> int:
    """An open descriptor on state_dir()/name holding a flock (released when it is closed)."""
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir(), name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure_bridge(requested: str | None) -> Bridge:
    """Create (or find) the bridge, forwarding and the NAT rule; idempotent and safe across builds."""
    lock = locked("lock")
    try:
        with IPRoute() as ipr:
            existing = _bridge_address(ipr)
            if existing is not None:
                if requested and ipaddress.ip_network(requested, strict=False) != existing.network:
                    raise NetworkSetupError(
                        f"bridge {BRIDGE} already has subnet {existing.network}, not {requested}",
                        hint="remove it with `pybuild network prune` (when no build runs), or drop --bridge-subnet")
                bridge = Bridge(existing.network, existing.ip)
            else:
                bridge = _create_bridge(ipr, _choose_subnet(ipr, requested))
        try:
            _enable_forwarding()
            _ensure_nat(bridge.subnet)
        except BaseException:
            if existing is None:
                remove_bridge()
            raise
        return bridge
    finally:
        os.close(lock)


def _bridge_address(ipr: IPRoute) -> ipaddress.IPv4Interface | None:
    links = ipr.link_lookup(ifname=BRIDGE)
    if not links:
        return None
    for addr in ipr.get_addr(index=links[0], family=socket.AF_INET):
        return ipaddress.IPv4Interface(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
    ipr.link("del", index=links[0])  # a bridge without its address is a half-made one: make it again
    return None


def _choose_subnet(ipr: IPRoute, requested: str | None) -> ipaddress.IPv4Network:
    """The requested subnet, or the first of docker's pools that overlaps no route of this namespace."""
    routes = []
    for route in ipr.get_routes(family=socket.AF_INET):
        dst = route.get_attr("RTA_DST")
        if dst and route["dst_len"] > 0:
            routes.append(ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False))
    if requested:
        try:
            subnet = ipaddress.ip_network(requested, strict=False)
        except ValueError as exc:
            raise NetworkSetupError(f"--bridge-subnet {requested!r}: {exc}",
                                    hint="give an IPv4 network such as 10.88.0.0/16") from None
        if not isinstance(subnet, ipaddress.IPv4Network) or subnet.prefixlen > 29:
            raise NetworkSetupError(f"--bridge-subnet {requested!r} is not an IPv4 network of /29 or larger",
                                    hint="give an IPv4 network such as 10.88.0.0/16")
        clash = [str(r) for r in routes if r.overlaps(subnet)]
        if clash:
            raise NetworkSetupError(f"--bridge-subnet {subnet} overlaps the host's route to {clash[0]}",
                                    hint="choose a subnet no host route covers, or leave --bridge-subnet out")
        return subnet
    for pool in DEFAULT_POOLS:
        subnet = ipaddress.IPv4Network(pool)
        if not any(r.overlaps(subnet) for r in routes):
            return subnet
    raise NetworkSetupError("every default bridge subnet (172.17-31.0.0/16, 192.168.0.0/16) overlaps a host route",
                            hint="give a free one with --bridge-subnet (or PYBUILD_BRIDGE_SUBNET), or build with "
                                 "--network none|host")


def _create_bridge(ipr: IPRoute, subnet: ipaddress.IPv4Network) -> Bridge:
    gateway = next(subnet.hosts())
    try:
        ipr.link("add", ifname=BRIDGE, kind="bridge")
    except NetlinkError as exc:
        if exc.code == errno.EPERM:
            raise NetworkSetupError(f"creating bridge {BRIDGE}: permission denied (needs CAP_NET_ADMIN, i.e. root)")
        if exc.code != errno.EEXIST:
            raise NetworkSetupError(f"creating bridge {BRIDGE}: {os.strerror(exc.code)}") from None
    try:
        index = ipr.link_lookup(ifname=BRIDGE)[0]
        ipr.addr("add", index=index, address=str(gateway), prefixlen=subnet.prefixlen)
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        remove_bridge()
        raise NetworkSetupError(f"configuring bridge {BRIDGE}: {os.strerror(exc.code)}") from None
    return Bridge(subnet, gateway)


def _enable_forwarding() -> None:
    try:
        with open("/proc/sys/net/ipv4/ip_forward", "w") as handle:
            handle.write("1")
    except OSError as exc:
        raise NetworkSetupError(f"enabling IPv4 forwarding: {exc.strerror}") from None


def _nat_expressions(subnet: ipaddress.IPv4Network) -> list:
    """`ip saddr SUBNET oifname != BRIDGE masquerade` as nf_tables expressions."""
    return [
        [genex("payload", {"dreg": 1, "base": 1, "offset": 12, "len": 4})],  # network header: saddr
        [genex("bitwise", {"sreg": 1, "dreg": 1, "len": 4,
                           "mask": {"attrs": [("NFTA_DATA_VALUE", subnet.netmask.packed)]},
                           "xor": {"attrs": [("NFTA_DATA_VALUE", b"\0\0\0\0")]}})],
        [genex("cmp", {"sreg": 1, "op": 0, "data": {"attrs": [("NFTA_DATA_VALUE", subnet.network_address.packed)]}})],
        [genex("meta", {"key": 7, "dreg": 1})],  # NFT_META_OIFNAME
        [genex("cmp", {"sreg": 1, "op": NFT_CMP_NEQ,
                       "data": {"attrs": [("NFTA_DATA_VALUE", struct.pack("16s", BRIDGE.encode()))]}})],
        [genex("masq", {})],
    ]


def _ensure_nat(subnet: ipaddress.IPv4Network) -> None:
    """The table, chain and rule; made again from scratch unless exactly one rule is there already."""
    try:
        with NFTables(nfgen_family=NFPROTO_IPV4) as nft:
            tables = [t.get_attr("NFTA_TABLE_NAME") for t in nft.get_tables()]
            if NFT_TABLE in tables:
                rules = [r for r in nft.get_rules() if r.get_attr("NFTA_RULE_TABLE") == NFT_TABLE]
                if len(rules) == 1:
                    return
                nft.table("del", name=NFT_TABLE)
            try:
                nft.table("add", name=NFT_TABLE)
                nft.chain("add", table=NFT_TABLE, name=NFT_CHAIN, hook="postrouting", type="nat",
                          priority=NF_SRCNAT_PRIORITY)
                nft.rule("add", table=NFT_TABLE, chain=NFT_CHAIN, expressions=_nat_expressions(subnet))
            except BaseException:
                _delete_table(nft)
                raise
    except NetlinkError as exc:
        raise NetworkSetupError(
            f"adding the NAT rule (nftables table ip {NFT_TABLE}): {os.strerror(exc.code)}",
            hint="the kernel needs nf_tables with NAT (nft_masq); without it build with --network none|host"
        ) from None


def _delete_table(nft: NFTables) -> None:
    try:
        nft.table("del", name=NFT_TABLE)
    except NetlinkError:
        pass


def remove_bridge() -> bool:
    """Delete the bridge and the NAT table (what `network prune` removes); True if anything was there."""
    removed = False
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=BRIDGE):
            ipr.link("del", index=index)
            removed = True
    try:
        with NFTables(nfgen_family=NFPROTO_IPV4) as nft:
            if NFT_TABLE in [t.get_attr("NFTA_TABLE_NAME") for t in nft.get_tables()]:
                nft.table("del", name=NFT_TABLE)
                removed = True
    except NetlinkError:
        pass
    return removed


def prune() -> str:
    """Remove the bridge, the NAT table and the address leases unless a build holds them; says what went."""
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    import shutil
    import time

    deadline = time.monotonic() + PRUNE_WAIT
    while True:
        try:
            inuse = locked("inuse", fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise NetworkSetupError("a running build is using the bridge network",
                                        hint="prune once it has finished") from None
            time.sleep(0.1)
    try:
        removed = remove_bridge()
        shutil.rmtree(os.path.join(state_dir(), "leases"), ignore_errors=True)
    finally:
        os.close(inuse)
    gone = netstate.prune_gone(STATE_DIR)  # the leases and locks of namespaces that no longer exist
    return (f"removed bridge {BRIDGE} and nftables table ip {NFT_TABLE}" if removed
            else "nothing to remove: no pybuild bridge network in this network namespace") + \
        (f"; removed the state of {len(gone)} network namespace(s) that are gone: {' '.join(gone)}" if gone else "")
