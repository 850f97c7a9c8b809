"""The files a RUN's network gets (builder/sandbox/network.py): docker's resolv.conf and /etc/hosts rules."""
from __future__ import annotations

from builder.sandbox.network import bridge_resolv_conf, hosts_file, resolv_conf


def test_bridge_resolv_conf_drops_loopback_and_ipv6_nameservers_and_keeps_the_rest():
    host = "search corp.test\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nnameserver fd00::1\n" \
           "options edns0\n"
    assert bridge_resolv_conf(host) == "search corp.test\nnameserver 10.0.0.2\noptions edns0\n"


def test_bridge_resolv_conf_falls_back_to_dockers_default_servers():
    assert bridge_resolv_conf("nameserver 127.0.0.1\n") == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert bridge_resolv_conf(None) == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def test_resolv_conf_per_mode():
    host = "nameserver 127.0.0.1\nnameserver 192.0.2.1\n"
    assert resolv_conf("host", host) == host
    assert resolv_conf("bridge", host) == "nameserver 192.0.2.1\n"
    assert "nameserver" not in resolv_conf("none", host)


def test_hosts_on_a_bridge_end_with_extra_hosts_then_the_containers_own_address():
    text = hosts_file("box", (("db", "10.0.0.5"),), "172.18.0.7")
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost" and "127.0.1.1\tbox" not in lines
    assert lines[-2:] == ["10.0.0.5\tdb", "172.18.0.7\tbox"]


def test_hosts_without_an_address_keep_the_loopback_hostname_line():
    assert "127.0.1.1\tbox" in hosts_file("box", ()).splitlines()


def test_add_host_takes_name_colon_ip_name_equals_ip_and_host_gateway_and_refuses_the_rest():
    import pytest

    from builder.build import _extra_hosts
    from builder.errors import UsageError

    assert _extra_hosts(["db:10.0.0.5", "v6=[fd00::1]", "gw:host-gateway"]) == (
        ("db", "10.0.0.5"), ("v6", "fd00::1"), ("gw", "host-gateway"))
    for bad in ("db", "db:not-an-ip", ":10.0.0.5"):
        with pytest.raises(UsageError, match="is not NAME:IP"):
            _extra_hosts([bad])
