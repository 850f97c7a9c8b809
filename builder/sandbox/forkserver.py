"""Starting the step helpers: a fresh interpreter per helper (`Exec`), or forks of one per build (`ForkServer`).

Every RUN runs `builder.sandbox.init` and every COPY/ADD/WORKDIR `builder.ops.fileop` in a process of its own.
Exec'ing `python -m <module>` for each costs 40-85 ms of interpreter start and imports per step on this
machine (tests/unit/builder/test_helper_imports.py); a build of ten steps spends most of a second on it.

`ForkServer` pays that once per build: it execs one fresh, single-threaded interpreter (the "zygote", STYLE.md
habit 8: the threaded builder still never forks) that has imported the helpers' modules and forks a child per
request. A child is what `Exec` would have started: same module `main`, same arguments, its descriptors at the
same numbers (0-2 and `pass_fds`), nothing else open, default signal dispositions; the helper code cannot tell
the difference. The builder gets a pidfd for each child, so killing it cannot hit a reused pid.

Protocol, over a SOCK_SEQPACKET socketpair made by `ForkServer` (the zygote's end is its argv[1]; argv[2], the
builder's pid, is there for `ps`: the children inherit the command line, their comm says pybuild-<helper>):
  zygote → builder   b"ready" once its imports are done
  builder → zygote   one message per child: JSON {"module", "args", "fds"} and, by SCM_RIGHTS, a reply
                     socket followed by the descriptors to place at the numbers listed in "fds"
  zygote → reply     JSON {"pid"} with the child's pidfd, or {"error"} when fork failed; later
                     JSON {"status": waitpid status} once the child is reaped; then the zygote closes it
Lifetimes: the zygote exits when its control socket reaches EOF, which happens when the builder closes it
(`ForkServer.close`) or dies, even by SIGKILL; it SIGKILLs the children still running and reaps them first.
A child dies with the zygote (PR_SET_PDEATHSIG); the init's own stages follow as before, so nothing outlives
the builder.
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import Protocol

from builder.sandbox.zygote import MAX_FDS

START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class Child(Protocol):
    """A started helper, as `subprocess.Popen` presents one."""

    pid: int
    returncode: int | None

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: killed by that signal); `subprocess.TimeoutExpired` after `timeout`."""

    def kill(self) -> None:
        """SIGKILL, unless it has already been reaped; idempotent."""


class Launcher(Protocol):
    """Starts `python -m <module> <args>` equivalents. Descriptors: None inherits the builder's,
    `subprocess.DEVNULL` is /dev/null; `pass_fds` keep their numbers in the child."""

    parent_pid: int  # the pid a child sees as its parent (a helper dying with its parent checks it)

    def spawn(self, module: str, args: list[str], *, stdin: int | None, stdout: int | None,
              stderr: int | None, pass_fds: tuple[int, ...] = ()) -> Child: ...


class Exec:
    """A fresh interpreter per helper (the fallback, and what `pybuild run` and direct callers use)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.parent_pid = os.getpid()

    def spawn(self, module: str, args: list[str], *, stdin: int | None, stdout: int | None,
              stderr: int | None, pass_fds: tuple[int, ...] = ()) -> Child:
        return subprocess.Popen([sys.executable, "-m", module, *args], stdin=stdin, stdout=stdout, stderr=stderr,
                                close_fds=True, pass_fds=pass_fds, env=self.env)


class ForkServer:
    """One zygote running `python -m <module> CONTROL_FD BUILDER_PID` (a module calling `serve`), started on the
    first `spawn`; thread-safe. `close()` stops it (the owner calls it once no child is running)."""

    def __init__(self, module: str, env: dict[str, str] | None = None) -> None:
        self.module = module
        self.env = env
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._control: socket.socket | None = None

    @property
    def parent_pid(self) -> int:
        self._start()
        assert self._proc is not None
        return self._proc.pid

    def _start(self) -> None:
        with self._lock:
            if self._control is not None:
                return
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            errors = os.memfd_create("pybuild-forkserver-stderr")  # its own stderr: read only if it fails to start
            try:
                # The builder's pid is only for people (and tests) reading `ps`: the zygote's children
                # inherit this command line.
                try:
                    proc = subprocess.Popen([sys.executable, "-m", self.module, str(theirs.fileno()),
                                             str(os.getpid())], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=errors, close_fds=True, pass_fds=(theirs.fileno(),), env=self.env)
                finally:
                    theirs.close()  # now only the zygote holds its end: its exit is EOF here
                ready, _, _ = select.select([mine], [], [], START_TIMEOUT)
                if not ready or mine.recv(16) != b"ready":
                    proc.kill()
                    proc.wait()
                    os.lseek(errors, 0, os.SEEK_SET)
                    last = (os.read(errors, 65536).decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                    raise OSError(f"the step helpers' fork server ({self.module}) did not start: {last}")
            except BaseException:
                mine.close()
                raise
            finally:
                os.close(errors)
            self._proc, self._control = proc, mine

    def spawn(self, module: str, args: list[str], *, stdin: int | None, stdout: int | None,
              stderr: int | None, pass_fds: tuple[int, ...] = ()) -> Child:
        self._start()
        assert self._control is not None
        if 3 + len(pass_fds) > MAX_FDS - 1:
            raise ValueError(f"at most {MAX_FDS - 4} descriptors can be passed")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        opened: list[int] = []
        try:
            std = [_resolve(target, default, opened) for target, default in ((stdin, 0), (stdout, 1), (stderr, 2))]
            header = json.dumps({"module": module, "args": args, "fds": [0, 1, 2, *pass_fds]}).encode()
            with self._lock:
                try:
                    socket.send_fds(self._control, [header], [theirs.fileno(), *std, *pass_fds])
                except (BrokenPipeError, ConnectionError) as exc:
                    raise OSError(errno.EPIPE, "the step helpers' fork server has exited") from exc
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
            for fd in opened:
                os.close(fd)
        try:
            data, fds, _, _ = socket.recv_fds(mine, 4096, 1)
            reply = json.loads(data) if data else {"error": "the step helpers' fork server has exited"}
            if "error" in reply:
                for fd in fds:
                    os.close(fd)
                raise OSError(reply["error"])
            return Forked(int(reply["pid"]), fds[0], mine)
        except BaseException:
            mine.close()
            raise

    def close(self) -> None:
        """Stop the zygote (it kills any child still running); idempotent."""
        with self._lock:
            control, proc, self._control, self._proc = self._control, self._proc, None, None
        if control is None or proc is None:
            return
        control.close()  # EOF: the zygote reaps what is left and exits
        if not _exits_within(proc, STOP_TIMEOUT):
            proc.kill()
        proc.wait()


def _exits_within(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether ``proc`` exits within ``timeout`` s, told by its pidfd (readable at exit) the moment it does:
    Popen.wait(timeout) polls with sleeps of up to 50 ms, which a build's end waited out (~25 ms at median)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # reaped already, or a kernel before 5.3
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _resolve(target: int | None, default: int, opened: list[int]) -> int:
    if target is None:
        return default
    if target == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        opened.append(fd)
        return fd
    return target


def memfd(name: str, data: bytes = b"") -> int:
    """An anonymous file holding ``data``, offset 0 (close-on-exec unless passed): a helper's spec or output."""
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def read_memfd(fd: int) -> bytes:
    """Everything in ``fd`` from its start (what a helper wrote to it)."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


class Forked:
    """A child of the zygote: waited for through its reply socket, killed through its pidfd."""

    def __init__(self, pid: int, pidfd: int, reply: socket.socket) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._reply = reply

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        ready, _, _ = select.select([self._reply], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired(f"{self.pid}", timeout or 0)
        data = self._reply.recv(4096)
        if data:
            self.returncode = os.waitstatus_to_exitcode(json.loads(data)["status"])
        else:  # the zygote died; the child died with it (PR_SET_PDEATHSIG)
            self.returncode = -signal.SIGKILL
        self._reply.close()
        os.close(self._pidfd)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass  # exited, not yet reported


# --- the zygote --------------------------------------------------------------------------------------
