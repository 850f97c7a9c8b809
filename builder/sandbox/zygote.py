"""The zygote's side of the fork server (builder/sandbox/forkserver.py has the builder's side and the protocol):
`serve` forks a child per request and reports its end. Its own module, so that the zygote imports neither
subprocess nor the builder's side (spawn-to-ready 51-53 → 47-50 ms here; a cold build's first step waits for it)."""
from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import sys
import traceback
from typing import Callable, NoReturn

from builder.sandbox import syscalls as sc

MAX_FDS = 16  # descriptors a request may carry (SCM_RIGHTS)


Handler = Callable[[list[str]], object]


def serve(control_fd: int, handlers: dict[str, Handler],
          prepare: dict[str, Callable[[], None]] | None = None, ready: Callable[[], None] | None = None) -> None:
    """The zygote's loop: fork a child per request, report its end, stop at EOF (see the module docstring).
    `handlers` maps a module name to its main (called with the args; returns or raises SystemExit with the
    exit code); `prepare[module]` runs once in the zygote before its first child of that module forks (work
    every such child would repeat; a failure is left for the child to meet and report); `ready` runs once
    right after the zygote said it is ready (to start such work in a child of its own; a failure is ignored)."""
    pending = dict(prepare or {})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the builder's to handle
    control = socket.socket(fileno=control_fd)
    control.send(b"ready")
    if ready is not None:
        try:
            ready()
        except Exception:  # noqa: BLE001 - the prepare step does the work itself then
            pass
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd → (pid, reply socket)
    while True:
        watched: list[socket.socket | int] = [control, *children]
        readable, _, _ = select.select(watched, [], [])
        for item in readable:
            if item is control:
                data, fds, _, _ = socket.recv_fds(control, 65536, MAX_FDS)
                if not data:
                    _stop(children)
                    return
                request = json.loads(data)
                if request.get("module") in pending:
                    try:
                        pending.pop(request["module"])()
                    except Exception:  # noqa: BLE001 - the child repeats the work and reports the error
                        pass
                _fork(request, fds, control, children, handlers)
            else:
                assert isinstance(item, int)  # a child's pidfd
                pid, reply = children.pop(item)
                _, status = os.waitpid(pid, 0)
                os.close(item)
                try:
                    reply.send(json.dumps({"status": status}).encode())
                except OSError:
                    pass  # the builder stopped waiting (it is going away)
                reply.close()


def _stop(children: dict[int, tuple[int, socket.socket]]) -> None:
    """The builder is gone or done: SIGKILL the children still running and reap them."""
    for pidfd, (pid, reply) in children.items():
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(pidfd)
        reply.close()
    children.clear()


def _fork(request: dict, fds: list[int], control: socket.socket,
          children: dict[int, tuple[int, socket.socket]], handlers: dict[str, Handler]) -> None:
    reply = socket.socket(fileno=fds[0])
    given = fds[1:]
    zygote = os.getpid()
    try:
        pid = os.fork()
    except OSError as exc:
        reply.send(json.dumps({"error": f"starting {request['module']}: {exc.strerror}"}).encode())
        reply.close()
        for fd in given:
            os.close(fd)
        return
    if pid == 0:
        others = [control, reply, *(r for _, r in children.values())]
        _child(request, given, zygote, others, handlers)
    for fd in given:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(reply, [json.dumps({"pid": pid}).encode()], [pidfd])
    except OSError:
        pass  # the builder gave up on this child; it is still reaped below
    children[pidfd] = (pid, reply)


def _child(request: dict, given: list[int], zygote: int, sockets: list[socket.socket],
           handlers: dict[str, Handler]) -> NoReturn:
    """In the forked child: become what `python -m module args` would be, run it, exit (never returns)."""
    code = 1
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote:
            os._exit(1)
        for sock in sockets:
            sock.detach()  # closed below by number; the objects must not close a reused number later
        _place(given, request["fds"])
        with open("/proc/self/comm", "w") as comm:
            comm.write("pybuild-" + request["module"].rsplit(".", 1)[-1])
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the zygote ignores it; a fresh interpreter does not
        result = handlers[request["module"]](list(request["args"]))
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what an exec'd interpreter would print before exiting 1
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _place(given: list[int], targets: list[int]) -> None:
    """Put descriptor given[i] at number targets[i] and close every other descriptor of this process."""
    open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    base = max([*open_fds, *targets, *given]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in given]
    os.closerange(0, base)
    for fd, target in zip(moved, targets):
        os.dup2(fd, target, inheritable=True)
    for fd in moved:
        os.close(fd)
