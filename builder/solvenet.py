"""RUN's default network for one solve: the bridge's pool of prepared namespaces (builder/sandbox/netpool.py), or
in rootless mode the build's slirp4netns namespace (builder/slirp.py), made on first need and closed with the solve.

The pool's helper (with pyroute2) starts at the build's first cache miss, in parallel with the steps, so a fully
cached rebuild never starts it; a RUN that needs the bridge (its own network, or --add-host's host-gateway) asks
`for_op` for it.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from builder import rootless, slirp


class RunNetworks:
    """The network RUN's default mode joins, for the steps of one solve."""

    def __init__(self, bridge_subnet: str | None, extra_hosts: tuple[tuple[str, str], ...]) -> None:
        self.bridge_subnet = bridge_subnet  # --bridge-subnet: the bridge's subnet when pybuild creates it
        self.extra_hosts = extra_hosts  # --add-host: a "host-gateway" address needs the bridge
        self._pool: Any = None  # NetworkPool or slirp.SlirpNetwork, made on first need
        self._lock = threading.Lock()
        self._bridged = False  # does any step to solve want the default network?
        self._slirp_failed = False  # rootless: slirp4netns could not start; RUNs then get an isolated network

    def plan(self, steps: list) -> None:
        """Note whether the steps to solve use the default network (rootless: say once what they get instead)."""
        self._bridged = any(getattr(step.op, "network", None) == "default" for step in steps)
        if rootless.entered() and any(step.kind == "exec" for step in steps):
            self._bridged = False  # no bridge without CAP_NET_ADMIN on the host: slirp4netns, or isolated
            rootless.run_notice(slirp.available())

    def on_miss(self) -> None:
        """A cache miss: this build runs something, so the pool's helper starts now, in parallel."""
        if self._bridged:
            self._network().start()

    def for_op(self, op) -> Any:
        """The network pool when this RUN needs the bridge: to run on it, or for --add-host's host-gateway."""
        wanted = op.network == "default" or any(ip == "host-gateway" for _, ip in self.extra_hosts)
        if not wanted:
            return None
        return self._user_mode_network() if rootless.entered() else self._network()

    def close(self) -> None:
        """Drop every namespace (and veth) the pool's helper made, or end slirp4netns."""
        if self._pool is not None:
            self._pool.close()

    def _network(self) -> Any:
        """The pool of network namespaces for RUN's default network (builder/sandbox/netpool.py)."""
        with self._lock:
            if self._pool is None:
                # lazy: saves ~16 ms at start-up
                from builder.sandbox.netpool import NetworkPool
                from builder.sandbox.runner import init_env

                self._pool = NetworkPool(self.bridge_subnet, env=init_env())
            return self._pool

    def _user_mode_network(self) -> Any:
        """Rootless: the build's slirp4netns namespace (builder/slirp.py), or None (an isolated one) without it."""
        with self._lock:
            if self._pool is None and slirp.available() and not self._slirp_failed:
                try:
                    self._pool = slirp.SlirpNetwork()
                except (slirp.SlirpError, OSError) as exc:
                    self._slirp_failed = True
                    print(f"warning: rootless mode: {exc}; RUN's default network is isolated (only loopback)",
                          file=sys.stderr)
            return self._pool
