"""Networking of a build container.

"none": a fresh network namespace whose only interface, `lo`, is brought up (BuildKit's
`--network=none` gives the same: 127.0.0.1 works, nothing else does).
"host": the builder's network namespace, unchanged.
"bridge": a namespace prepared by the build's pool (netpool.py), joined by a veth pair to the pybuild0
bridge (bridge.py); the init setns()es into it (spec.netns_fd) and needs nothing else here.

`lo` is brought up with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls rather than pyroute2: importing
pyroute2 costs 150-250 ms of interpreter time (measured on this machine) and the init pays it on
every RUN, for a single flag change that two ioctls make.
"""
from __future__ import annotations

import _socket  # not `socket`: its enum set-up costs the init ~9 ms per RUN for one ioctl socket
import fcntl
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH14x"  # struct ifreq: name[IFNAMSIZ], short ifr_flags, padding to 32 bytes


def interface_up(name: str) -> None:
    """Set IFF_UP on interface `name` in the calling process's network namespace."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack(_IFREQ, name.encode(), 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        if flags & IFF_UP:
            return
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(_IFREQ, name.encode(), flags | IFF_UP))
    finally:
        sock.close()


def setup_network(mode: str) -> None:
    """Called right after unshare(): prepare the namespace for network `mode`."""
    if mode == "none":
        try:
            interface_up("lo")
        except OSError as exc:
            raise OSError(exc.errno, f"bringing up the loopback interface: {exc.strerror}") from exc


def hosts_file(hostname: str, extra_hosts: tuple[tuple[str, str], ...], address: str = "") -> str:
    """The container's /etc/hosts: docker's localhost lines, the hostname, then extra hosts; on a bridge
    (`address` set) docker's order: extra hosts, then the container's address and hostname."""
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    if not address:
        lines.append(f"127.0.1.1\t{hostname}")
    lines += [f"{ip}\t{host}" for host, ip in extra_hosts]
    if address:
        lines.append(f"{address}\t{hostname}")
    return "\n".join(lines) + "\n"


def host_resolv_conf() -> str | None:
    """The host's resolv.conf; with systemd-resolved's stub (127.0.0.53) the file of its real upstream servers,
    as docker's libnetwork resolvconf.Path() picks."""
    text = _read("/etc/resolv.conf")
    if text is not None and _nameservers(text) == ["127.0.0.53"]:
        return _read("/run/systemd/resolve/resolv.conf") or text
    return text


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _nameservers(text: str) -> list[str]:
    return [f[1] for f in (line.split() for line in text.splitlines()) if len(f) > 1 and f[0] == "nameserver"]


DEFAULT_DNS = ("8.8.8.8", "8.8.4.4")  # docker's fallback when the host has only loopback resolvers


def bridge_resolv_conf(host: str | None) -> str:
    """docker's resolv.conf on a bridge: the host's, minus loopback and IPv6 nameservers (unreachable from the
    container's namespace); docker's default servers if none are left."""
    kept = []
    for line in (host or "").splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] == "nameserver" and (
                fields[1].startswith("127.") or ":" in fields[1]):
            continue
        kept.append(line)
    if not _nameservers("\n".join(kept)):
        kept += [f"nameserver {server}" for server in DEFAULT_DNS]
    return "\n".join(kept) + "\n"


def resolv_conf(mode: str, host_resolv_conf: str | None) -> str:
    """The container's /etc/resolv.conf: the host's for "host" networking, docker's filtered copy on a
    bridge, a harmless one for "none"."""
    if mode == "host" and host_resolv_conf is not None:
        return host_resolv_conf
    if mode == "bridge":
        return bridge_resolv_conf(host_resolv_conf)
    # No nameserver can be reached without a network; say so rather than point at one.
    return "# pybuild: network mode \"none\" has no DNS\noptions ndots:0\n"
