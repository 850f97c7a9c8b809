"""RUN: execute a command in an isolated build container on top of the parent snapshot."""
from __future__ import annotations

import codecs
import functools
import subprocess
import threading
from collections import deque
from contextlib import ExitStack
from typing import TYPE_CHECKING, Callable

from builder import rootless, snapshotter
from builder.errors import BuildCancelled, BuildStepError, PybuildError
from builder.ops.mounts import realise, run_env
from builder.plan.steps import ExecOp, Step
from builder.sandbox.forkserver import Launcher
from builder.sandbox.runner import SandboxError, run
from builder.sandbox.spec import ContainerSpec, Resources
from cache import Interrupted

if TYPE_CHECKING:
    from builder.ops.mounts import MountSources
    from cache import Layer, Snapshot, Store

OUTPUT_TAIL = 20
LONGEST_LINE = 65536  # a longer unfinished line (a progress bar redrawn with \r forever) is passed on as it is


class Lines:
    """One output stream cut into whole lines, whatever chunks the pipe delivers: an unfinished line (or UTF-8
    character) waits for its end, or for close() at the end of the step (buildkit's logs are per stream too)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.partial = ""

    def feed(self, chunk: bytes) -> None:
        text = self.partial + self.decoder.decode(chunk)
        end = text.rfind("\n") + 1
        if end == 0 and len(text) > LONGEST_LINE:
            end = len(text)
        self.partial = text[end:]
        if end:
            self.emit(text[:end])

    def close(self) -> None:
        text = self.partial + self.decoder.decode(b"", final=True)
        self.partial = ""
        if text:
            self.emit(text)
LIMIT_HINTS = {"pids": "raise the limit with `pybuild build --pids-limit N` (-1: no limit)",
               "memory": "raise the limit with `pybuild build --memory SIZE` (e.g. 2g)"}


def limit_message(limit: str, resources: Resources) -> str:
    """One line naming the cgroup limit a RUN hit and its flag."""
    if limit == "pids":
        return f"the RUN reached its process limit of {resources.pids_limit} (--pids-limit): a fork was refused"
    memory = resources.memory or 0
    shown = f"{memory / (1 << 20):g}m" if memory % (1 << 20) == 0 else f"{memory} bytes"
    return f"the RUN ran out of memory (--memory {shown}): the kernel killed a process"


def render_location(step: Step, dockerfile_lines: list[str] | None) -> str:
    """The instruction's Dockerfile lines with line numbers, for error context."""
    if step.span is None or not dockerfile_lines:
        return step.created_by
    first, last = step.span.line, step.span.end_line
    shown = []
    for number in range(first, min(last, len(dockerfile_lines)) + 1):
        shown.append(f"{number:>5} | {dockerfile_lines[number - 1]}")
    return "\n".join(shown)


def execute(store: Store, step: Step, parent_snapshot: Snapshot | None, *, compression: str | None,
            log: Callable[[str, str], None], cancel: threading.Event | None, dockerfile_lines: list[str] | None,
            hostname: str, mounts: MountSources | None = None, launcher: Launcher | None = None,
            on_error: Callable[[ContainerSpec], None] | None = None,
            resources: Resources | None = None, network=None, extra_hosts=(), proxy_env=(),
            source_date_epoch: int | None = None, layer_progress: Callable[[int, int], None] | None = None,
            ) -> tuple[Snapshot, Layer | None]:
    """Run the step; returns (snapshot, layer|None). Raises BuildStepError on a non-zero exit.
    `launcher` starts the container's init (the build's fork server); by default a fresh interpreter.
    `on_error` (--on-error=shell) is called with the step's spec after a non-zero exit, before its files go.
    `resources`: the RUN's cgroup limits (default: Resources(), a pids limit).
    `network`: the build's NetworkPool, for a RUN on the default (bridge) network. `extra_hosts`: --add-host
    pairs; `proxy_env`: undeclared proxy build args (both left out of the key, as BuildKit's ProxyEnv)."""
    op = step.op
    assert isinstance(op, ExecOp)  # the solver sends its RUN steps here
    with ExitStack() as stack:
        try:
            extra = realise(op, mounts, stack) if op.mounts and mounts is not None else ()
            env = run_env(op, mounts) if op.mounts else op.env
        except (BuildStepError, BuildCancelled):
            raise
        except PybuildError as exc:  # a mount that cannot be set up: say which instruction asked for it
            raise BuildStepError(f"{step.span}: {step.created_by}: {exc.message}", hint=exc.hint,
                                 context=render_location(step, dockerfile_lines), reference=exc.reference) from exc
        declared = {item.partition("=")[0] for item in env}
        env = (*env, *(item for item in proxy_env if item.partition("=")[0] not in declared))
        net = _network(step, op, network, extra_hosts, stack, dockerfile_lines)
        return _execute(store, step, op, parent_snapshot, compression=compression, log=log, cancel=cancel,
                        dockerfile_lines=dockerfile_lines, hostname=hostname, extra_mounts=extra,
                        env=env, launcher=launcher, net=net, on_error=on_error,
                        resources=resources or Resources(), source_date_epoch=source_date_epoch,
                        layer_progress=layer_progress)


def _network(step: Step, op: ExecOp, pool, extra_hosts, stack: ExitStack, dockerfile_lines) -> dict:
    """The spec's network fields: a prepared namespace from the pool (released with `stack`) for the default
    network, and /etc/hosts entries with host-gateway resolved to the bridge's address."""
    from builder.sandbox.netpool import PoolError  # lazy: saves ~4 ms at start-up

    fields: dict = {"network": op.network}
    if op.network == "default" and pool is None and rootless.entered():
        fields["network"] = "none"  # rootless: an isolated namespace (loopback only); the key is unchanged
    try:
        if fields["network"] == "default":
            lease = pool.acquire()
            stack.callback(pool.release, lease)
            fields.update(network="bridge", netns_fd=lease.fd, netns_address=lease.address)
        if any(ip == "host-gateway" for _, ip in extra_hosts):
            gateway = lease.gateway if fields["network"] == "bridge" else pool_gateway(pool)
            extra_hosts = tuple((name, gateway if ip == "host-gateway" else ip) for name, ip in extra_hosts)
    except PoolError as exc:
        hint = exc.hint or "build with --network none (no network) or --network host (the host's)"
        if "--network " not in hint:
            hint += "; or do without the bridge: --network none|host"
        raise BuildStepError(f"{step.span}: {step.created_by}: {exc}", context=render_location(step, dockerfile_lines),
                             hint=hint, reference="bridge-network") from None
    fields["extra_hosts"] = tuple(extra_hosts)
    return fields


def pool_gateway(pool) -> str:
    """The bridge's address for host-gateway on a RUN that is not on the bridge."""
    from builder.sandbox.netpool import PoolError  # lazy: saves ~4 ms at start-up

    if pool is None:
        raise PoolError("--add-host NAME:host-gateway needs the bridge network (the default)",
                        hint="give the address instead of host-gateway")
    return pool.gateway_address()


def _execute(store: Store, step: Step, op: ExecOp, parent_snapshot: Snapshot | None, *, compression, log, cancel,
             dockerfile_lines,
             hostname, extra_mounts, env, launcher, net, resources, on_error=None,
             source_date_epoch: int | None = None, layer_progress=None):
    mutable = store.prepare(parent_snapshot)
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL)
    total_lines = [0]

    def emit(stream: str, text: str) -> None:
        for line in text.splitlines():
            tail.append(line)
            total_lines[0] += 1
        log(stream, text)

    streams = {name: Lines(functools.partial(emit, name)) for name in ("stdout", "stderr")}

    try:
        spec = ContainerSpec(argv=op.argv, lowerdirs=tuple(str(p) for p in mutable.lowerdirs),
                             upperdir=str(mutable.upper), workdir=str(mutable.work), env=env, cwd=op.cwd,
                             user=op.user, hostname=hostname, mounts=extra_mounts, insecure=op.insecure,
                             resources=resources, snapshotter=snapshotter.current(store.root), **net)
        try:
            status = run(spec, stdin=subprocess.DEVNULL, stdout=streams["stdout"].feed,
                         stderr=streams["stderr"].feed, cancel=cancel,
                         launcher=launcher)  # a RUN gets no stdin, as in BuildKit
            for lines in streams.values():
                lines.close()
        except SandboxError as exc:
            raise BuildStepError(f"{step.span}: {step.created_by}: {exc}",
                                 context=render_location(step, dockerfile_lines)) from exc
        if cancel is not None and cancel.is_set():
            raise BuildCancelled()
        if status.limit is not None:  # fails even with exit code 0: a fork or an allocation was refused
            message = limit_message(status.limit, resources)
            raise BuildStepError(
                f"{step.span}: {step.created_by}: {message} (exit code: {status.code})",
                context=f"{render_location(step, dockerfile_lines)}\n[{total_lines[0]} lines of output]"
                        + (f"\n{chr(10).join(tail)}" if tail else ""),
                hint=LIMIT_HINTS[status.limit])
        if status.code != 0 and on_error is not None:
            on_error(spec)
        if status.code != 0:
            shown = "\n".join(tail)
            raise BuildStepError(
                f"process \"{' '.join(op.argv)}\" did not complete successfully: exit code: {status.code}",
                context=f"{render_location(step, dockerfile_lines)}\n[{total_lines[0]} lines of output]"
                        + (f"\n{shown}" if shown else ""),
                hint=f"the failing instruction is at {step.span}")
        snapshotter.settle(mutable)
        try:
            return store.commit(mutable, compression=compression, source_date_epoch=source_date_epoch,
                                cancelled=cancel.is_set if cancel is not None else None, progress=layer_progress)
        except Interrupted:
            raise BuildCancelled() from None
    finally:
        store.abort(mutable)
