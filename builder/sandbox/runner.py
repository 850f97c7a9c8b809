"""Run one container: spawn the sandbox init, pump its output, report how the command ended.

The builder is threaded, so it never forks or unshares itself (STYLE.md habit 8): run() starts
`python -m builder.sandbox.init` with subprocess.Popen (close_fds, no preexec_fn), or has a build's fork
server fork one (builder/sandbox/forkserver.py), and hands it the spec on a memfd. Several run() calls may
proceed at once from different threads.

The init dies with the thread that started it (PR_SET_PDEATHSIG is per thread; run() blocks that
thread until the container is gone, so the two lifetimes match), or with the fork server, which dies
with the builder.
"""
from __future__ import annotations

import _thread
import json
import os
import posixpath
import selectors
import subprocess
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Union

from builder.sandbox.cgroup import CgroupError, RunCgroup
from builder.sandbox.forkserver import Child, Exec, Launcher, memfd
from builder.sandbox.spec import ContainerSpec
from builder.sandbox.stubs import Stub, prune_noop_copy_ups, remove_stubs_in_upper
from builder.sandbox.userns import in_user_namespace

Output = Union[int, Callable[[bytes], None], None]
CANCEL_POLL_SECONDS = 0.05
DRAIN_SECONDS = 1.0
CHUNK = 65536
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How the command ended: code as a shell reports it (killed by N → 128+N) and the signal."""

    code: int
    signal: int | None = None
    limit: str | None = None  # "pids" or "memory": the RUN's cgroup hit that limit (see cgroup.py)


class SandboxError(Exception):
    """The container could not be set up or the command not started; the message is one line."""

    init_code: int | None = None  # the init's exit code when it reported the error (126/127: docker's codes)


def init_env() -> dict[str, str]:
    """The init's own environment (not the container's): enough for Python to find this package."""
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONPATH": _PACKAGE_ROOT}
    return env


class _Pump:
    """One thread reading the container's output pipes and the status pipe until EOF on all.

    Callbacks run on this thread, one chunk at a time. A callback that raises is not called again
    (its output is drained and dropped so the container cannot block on a full pipe); run()
    re-raises the exception once the container is gone.
    """

    def __init__(self, sinks: dict[int, Callable[[bytes], None]]) -> None:
        self.sinks = sinks
        self.error: BaseException | None = None
        self._done = threading.Event()
        # Not threading.Thread: its start() waits until the new thread runs, then for the GIL that thread holds
        # (up to a switch interval, 5 ms, on the RUN's clock); the output waits in the pipes meanwhile.
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        try:
            self._pump()
        finally:
            self._done.set()

    def _pump(self) -> None:
        with selectors.DefaultSelector() as selector:
            for fd in self.sinks:
                selector.register(fd, selectors.EVENT_READ)
            open_fds = set(self.sinks)
            while open_fds:
                for key, _ in selector.select():
                    chunk = os.read(key.fd, CHUNK)
                    if not chunk:
                        selector.unregister(key.fd)
                        open_fds.discard(key.fd)
                    elif self.error is None:
                        self._deliver(key.fd, chunk)

    def _deliver(self, fd: int, chunk: bytes) -> None:
        try:
            self.sinks[fd](chunk)
        except BaseException as exc:  # noqa: BLE001 - handed back to run()'s caller
            self.error = exc

    def join(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)


def run(spec: ContainerSpec, *, stdin: int | None = None, stdout: Output = None, stderr: Output = None,
        cancel: threading.Event | None = None, launcher: Launcher | None = None) -> ExitStatus:
    """Run spec.argv in a fresh container and wait for it.

    stdin/stdout/stderr: a file descriptor passed straight through (subprocess.DEVNULL works too),
    None to inherit the builder's, or (stdout/stderr) a callback receiving output chunks from a
    pump thread. cancel: once set, the container is SIGKILLed and ExitStatus(137, 9) returned.
    launcher: how the init is started (a build's `ForkServer`); by default a fresh interpreter.
    The container runs in a cgroup of its own with spec.resources' limits; ExitStatus.limit names a limit it hit.
    Raises SandboxError when the container cannot be set up or the command cannot be executed.
    """
    if in_user_namespace():  # rootless: no cgroup of our own without systemd's delegation (as rootless podman)
        return _run(spec, stdin, stdout, stderr, cancel, launcher)
    try:
        cgroup = RunCgroup(spec.resources)
    except OSError as exc:
        raise SandboxError(str(exc) if isinstance(exc, CgroupError) else f"the RUN's cgroup: {exc}") from exc
    try:
        status = _run(replace(spec, cgroups=cgroup.paths), stdin, stdout, stderr, cancel, launcher)
        limit = cgroup.limit_hit()
    finally:
        cgroup.close()  # kills what is left (nothing, normally: the PID namespace died with its PID 1)
    return replace(status, limit=limit) if limit else status


def _run(spec: ContainerSpec, stdin: int | None, stdout: Output, stderr: Output, cancel: threading.Event | None,
         launcher: Launcher | None) -> ExitStatus:
    spec_fd = memfd("pybuild-container-spec", spec.to_json().encode())
    status_r, status_w = os.pipe()
    sinks: dict[int, Callable[[bytes], None]] = {}
    status_chunks: list[bytes] = []
    pipes: dict[str, tuple[int, int]] = {}
    try:
        for name, target in (("stdout", stdout), ("stderr", stderr)):
            if callable(target):
                pipes[name] = os.pipe()
                sinks[pipes[name][0]] = target
        sinks[status_r] = status_chunks.append
        # ignore: a target without a pipe is not callable (an fd or None); mypy cannot tell from the dict
        proc = _start_init(launcher or Exec(init_env()), spec_fd, status_w, stdin,
                           pipes["stdout"][1] if "stdout" in pipes else stdout,  # type: ignore[arg-type]
                           pipes["stderr"][1] if "stderr" in pipes else stderr,  # type: ignore[arg-type]
                           () if spec.netns_fd is None else (spec.netns_fd,))
    except BaseException:
        for fd in [spec_fd, status_r, status_w] + [fd for pair in pipes.values() for fd in pair]:
            os.close(fd)
        raise
    for fd in [spec_fd, status_w] + [pair[1] for pair in pipes.values()]:
        os.close(fd)
    pump = _Pump(sinks)
    try:
        cancelled = _wait(proc, cancel)
    finally:
        if proc.returncode is None:  # interrupted (KeyboardInterrupt, cancel): take it all down
            proc.kill()
            proc.wait()
        drained = pump.join(DRAIN_SECONDS)
        if drained:
            for fd in sinks:
                os.close(fd)
        # FIXME(leak-on-stuck-pipe): if a process outside the container kept a pipe open, the
        # pump thread and its descriptors are abandoned rather than closed under its feet.
    if pump.error is not None:
        raise pump.error
    if cancelled:
        return ExitStatus(137, 9)
    messages = _messages(b"".join(status_chunks))
    if spec.upperdir is not None:
        restored = [p for m in messages for p in m.get("restored", ())]
        stubs = [Stub.from_json(s) for m in messages for s in m.get("stubs", ())]
        # in the overlay's work dir, on the upper's filesystem: gone with the step's temp dirs
        trash = tempfile.mkdtemp(dir=spec.workdir, prefix="stubs-") if stubs and spec.workdir else None
        if trash is not None:
            restored += remove_stubs_in_upper(spec.upperdir, trash, stubs)
        prune_noop_copy_ups(spec.upperdir, spec.lowerdirs, _with_ancestors(restored), trash)
    assert proc.returncode is not None  # _wait returned uncancelled: the init has exited
    return _result(proc.returncode, messages)


def _start_init(launcher: Launcher, spec_fd: int, status_w: int, stdin: int | None, stdout: int | None,
                stderr: int | None, extra_fds: tuple[int, ...] = ()) -> Child:
    """Stage 1 of the init, told whose death to die with; SandboxError when it cannot be started."""
    try:
        args = [str(spec_fd), str(status_w), str(launcher.parent_pid)]
        return launcher.spawn("builder.sandbox.init", args, stdin=stdin, stdout=stdout, stderr=stderr,
                              pass_fds=(spec_fd, status_w, *extra_fds))
    except OSError as exc:
        raise SandboxError(f"starting the sandbox init: {exc.strerror or exc}") from exc


def _wait(proc: Child, cancel: threading.Event | None) -> bool:
    """Wait for the init; True if `cancel` fired first (the init is then killed)."""
    if cancel is None:
        proc.wait()
        return False
    while True:
        try:
            proc.wait(timeout=CANCEL_POLL_SECONDS)
            return False
        except subprocess.TimeoutExpired:
            if cancel.is_set():
                proc.kill()  # SIGKILL to stage 1: PID 1 follows (PDEATHSIG), then the namespace
                proc.wait()
                return True


def _messages(status: bytes) -> list[dict]:
    messages = []
    for line in status.decode(errors="replace").splitlines():
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(message, dict):
            messages.append(message)
    return messages


def _with_ancestors(paths: list[str]) -> list[str]:
    """Each container path and its parents, "/" excluded: a copy-up brings the whole chain up."""
    result = set()
    for path in paths:
        while path not in ("/", ""):
            result.add(path)
            path = posixpath.dirname(path)
    return sorted(result)


def _result(returncode: int, messages: list[dict]) -> ExitStatus:
    """Turn the init's status messages (or, failing those, its exit code) into an ExitStatus."""
    errors = [m["error"] for m in messages if "error" in m]
    if errors:
        error = SandboxError(errors[0].splitlines()[0] if errors[0] else "container setup failed")
        error.init_code = returncode  # 126/127: the command could not be executed / found (docker's codes)
        raise error
    exits = [m for m in messages if "exit" in m]
    if exits:
        return ExitStatus(int(exits[-1]["exit"]), exits[-1].get("signal"))
    if not any(m.get("started") for m in messages):
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        raise SandboxError(f"the sandbox init {how} before starting the command")
    # Started, but PID 1 did not report the end: it was killed (e.g. by the OOM killer).
    if returncode < 0:
        return ExitStatus(128 - returncode, -returncode)
    return ExitStatus(returncode, returncode - 128 if returncode > 128 else None)
