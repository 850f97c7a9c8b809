"""`python -m builder.sandbox.init SPEC_FD STATUS_FD BUILDER_PID`: the container's init.

Started by runner.run() as a fresh, single-threaded interpreter (STYLE.md habit 8), so forking and
unshare() are safe here. Three processes:

  stage 1 (this process)  dies with the builder (PR_SET_PDEATHSIG); unshares the mount, UTS, IPC,
                          PID (and, for network "none", net) namespaces; brings `lo` up (for "bridge":
                          setns() into the pool's prepared namespace, spec.netns_fd); forks.
  PID 1                   first process of the new PID namespace: mounts the root filesystem,
                          pivot_root, resolves USER, forks the command, reaps every zombie,
                          forwards signals, reports its mount stubs, exits with the command's status.
  the command             starts a session of its own (no controlling terminal: TIOCSTI fails), drops to
                          USER and docker's capabilities, looks argv[0] up in the container's PATH, sets
                          no_new_privs and docker's seccomp filter (compiled by stage 1), execs; with
                          spec.insecure it keeps every capability and gets neither.

Every mount lives in the private mount namespace, so all of them vanish when its last process
dies: nothing leaks, even when the builder is SIGKILLed (stage 1 and PID 1 both die with their
parent, and the kernel kills a PID namespace with its PID 1).

Status protocol (STATUS_FD, one JSON object per line, read by the runner):
  {"error": "..."}                 setup failed; the message is one user-facing line
  {"started": true}                the command was executed
  {"stubs": [...]}                 the paths created only to be mounted over (stubs.py): the runner takes them out
                                   of the upper dir once the container is gone (overlayfs)
  {"restored": ["/etc", ...]}      fuse-overlayfs: directories whose mount stubs PID 1 removed itself
  {"exit": CODE, "signal": N|null} the command finished (signal set when it was killed by one)
After pivot_root nothing new can be imported (the host's Python is gone), hence the imports here.
"""
from __future__ import annotations

import errno
import fcntl  # imported here: after pivot_root the host's standard library is out of reach
import json
import os
import signal
import sys
import termios
from typing import NoReturn

from builder.sandbox import capabilities
from builder.sandbox import rootfs as rf
from builder.sandbox import seccomp
from builder.sandbox.capabilities import DEFAULT_CAPABILITIES
from builder.sandbox.cgroupprocs import join_cgroups, open_cgroups, write_pid
from builder.sandbox.execargs import (EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_SETUP, ExecError, exec_arguments,
                                     find_executable)
from builder.sandbox import syscalls as sc
from builder.sandbox.network import host_resolv_conf, setup_network
from builder.sandbox.spec import ContainerSpec
from builder.sandbox.stubs import ensure_path, remove_stubs
from builder.sandbox.users import ExecUser, UserError, lookup_user
from builder.sandbox.userns import setgroups_denied

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH)
# Python ignores these; a command must start with the defaults (subprocess' restore_signals).
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
RUN_CAPABILITIES = set(DEFAULT_CAPABILITIES)


class Status:
    """The status pipe to the runner (see the module docstring)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, **message: object) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            os.write(self.fd, data)
        except OSError:
            pass  # the runner is gone; nobody to tell


def describe(exc: BaseException) -> str:
    """One line for the user: an OSError's text without the "[Errno N]" prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__


def exit_code(wait_status: int) -> tuple[int, int | None]:
    """(shell-style exit code, signal or None) from a waitpid status: killed by N → 128+N."""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        return 128 + sig, sig
    return os.waitstatus_to_exitcode(wait_status), None


def _forward_signals_to(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)


def main(argv: list[str]) -> NoReturn:
    """Stage 1: namespaces, then fork PID 1 and pass its exit status on."""
    spec_fd, status_fd, builder_pid = (int(a) for a in argv[:3])
    os.set_inheritable(status_fd, False)
    os.umask(0o022)  # docker's: mount points, the working directory and the command all get it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C: forwarded once PID 1 exists
    status = Status(status_fd)
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != builder_pid:  # the builder died before prctl took effect
            os._exit(EXIT_SETUP)
        with os.fdopen(spec_fd, "rb") as handle:
            spec = ContainerSpec.from_json(handle.read().decode())
        # Every process of the RUN is counted and killed with its cgroup: PID 1 is moved in while it mounts the
        # root (a v1 move waits out an RCU grace period, 4-12 ms here) and forks the command only once it is in.
        # A fuse-overlayfs daemon is forked by this process, so it joins first, as it always did.
        late = open_cgroups(spec.cgroups) if spec.snapshotter != "fuse-overlayfs" else {}
        if not late:
            join_cgroups(spec.cgroups)
        host_resolv = host_resolv_conf()
        setgroups_denied()  # read (and cached) while the host's /proc is there
        if not spec.insecure:
            prepare()  # libseccomp is a host library: load it before pivot_root hides it
        last_cap = capabilities.last_capability()
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC
        if spec.network == "none":
            flags |= sc.CLONE_NEWNET
        sc.unshare(flags)
        if spec.netns_fd is not None:
            sc.setns(spec.netns_fd, sc.CLONE_NEWNET)
            os.close(spec.netns_fd)
        sc.make_mounts_private()
        setup_network(spec.network)
        premounted = _premount(spec)
        sc.unshare(sc.CLONE_NEWPID)  # after _premount: the next child is PID 1
        life_r, life_w = os.pipe()
        joined_r, joined_w = os.pipe() if late else (-1, -1)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the runner shows one line
        status.send(error=f"creating the container: {describe(exc)}")
        os._exit(EXIT_SETUP)
    pid = os.fork()
    if pid == 0:
        os.close(life_w)
        if late:
            os.close(joined_w)
            for fd in late.values():
                os.close(fd)
        container_init(spec, status, life_r, host_resolv, last_cap, premounted, joined_r)
    os.close(life_r)
    if late:
        os.close(joined_r)
        _move_in(late, pid, joined_w, status)
    os.close(status_fd)
    _forward_signals_to(pid)
    _, wait_status = os.waitpid(pid, 0)
    for daemon in premounted[2].daemons if premounted else ():  # every file is closed: end and reap it
        os.kill(daemon, signal.SIGKILL)
        os.waitpid(daemon, 0)
    os._exit(exit_code(wait_status)[0])


def _move_in(opened: dict[str, int], pid: int, joined_w: int, status: Status) -> None:
    """Stage 1: move PID 1 (`pid`) into the RUN's cgroups, then let it go on (one byte on `joined_w`); if that
    fails, report it and take PID 1 down before it forks anything (stage 1 then exits with its status)."""
    try:
        write_pid(opened, pid)
    except OSError as exc:
        if exc.errno != errno.ESRCH:  # ESRCH: PID 1 is gone already and has said why
            status.send(error=f"creating the container: {describe(exc)}")
        os.kill(pid, signal.SIGKILL)
    else:
        try:
            os.write(joined_w, b"j")
        except OSError:
            pass  # PID 1 failed to set up and has exited: its status says why
    os.close(joined_w)


_ahead: list[seccomp.Precompiled] = []


def prepare_ahead() -> None:
    """Have a child compile the command's seccomp filter while this process goes on (the fork server's zygote,
    once ready: the build's first steps run meanwhile); `prepare` takes the result."""
    _ahead.append(seccomp.Precompiled(RUN_CAPABILITIES))


def prepare() -> None:
    """Compile the command's seccomp filter, or take it from `prepare_ahead`'s child (cached per process: a fork
    server's zygote calls this once, before its first RUN)."""
    while _ahead:
        _ahead.pop().take()
    seccomp.program(RUN_CAPABILITIES)


def _parent_alive(life_r: int) -> bool:
    """The life pipe's write end belongs to stage 1 alone: EOF means stage 1 is gone."""
    os.set_blocking(life_r, False)
    try:
        return os.read(life_r, 1) != b""
    except BlockingIOError:
        return True
    finally:
        os.close(life_r)


def _premount(spec: ContainerSpec) -> tuple[rf.HostPaths, str, rf.Rootfs] | None:
    """fuse-overlayfs: the root is mounted here, in stage 1, so its daemon is no process of the container's
    (PID 1 kills every other process of its namespace when the command ends, before it cleans the layer up)."""
    if spec.snapshotter != "fuse-overlayfs":
        return None
    host = rf.HostPaths(spec)
    scratch = rf.mount_scratch()
    rootfs = rf.mount_overlay(host, scratch, fuse_overlayfs=True)
    # The daemon keeps this mount namespace to itself: pivot_root moves the root of every process of the namespace
    # it runs in, and the daemon's own (it reads /proc/self/fd) must stay the host's.
    sc.unshare(sc.CLONE_NEWNS)
    sc.make_mounts_private()
    return host, scratch, rootfs


def container_init(spec: ContainerSpec, status: Status, life_r: int, host_resolv: str | None,
                   last_cap: int, premounted: tuple[rf.HostPaths, str, rf.Rootfs] | None = None,
                   joined_r: int = -1) -> NoReturn:
    """PID 1 of the container: set up, wait until stage 1 has moved it into the RUN's cgroup (`joined_r`, -1:
    no wait), run the command, reap, clean up, exit with its status."""
    try:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if not _parent_alive(life_r):
            os._exit(EXIT_SETUP)
        rootfs = setup_container(spec, host_resolv, premounted)
    except Exception as exc:  # noqa: BLE001 - nothing to undo: the namespace takes the mounts along
        _fail(status, exc)
    if joined_r >= 0:
        joined = os.read(joined_r, 1)
        os.close(joined_r)
        if joined != b"j":  # stage 1 could not move this process in (and said so), or is gone
            os._exit(EXIT_SETUP)
    try:
        user = lookup_user("/", spec.user)
    except Exception as exc:  # noqa: BLE001
        _clean_up(rootfs, status)
        _fail(status, exc)
    env = list(spec.env)
    if spec.env_value("HOME") is None:
        env.append(f"HOME={user.home}")  # runc sets HOME from /etc/passwd when the image does not
    code, sig = run_command(spec, user, env, status, last_cap)
    _clean_up(rootfs, status)
    status.send(exit=code, signal=sig)
    os._exit(code)


def _fail(status: Status, exc: Exception) -> NoReturn:
    if isinstance(exc, (OSError, UserError, ValueError)):
        status.send(error=describe(exc))
    else:  # a bug here must still surface as one line, not as the command's exit code
        status.send(error=f"sandbox init: {type(exc).__name__}: {exc}")
    os._exit(EXIT_SETUP)


def _clean_up(rootfs: rf.Rootfs, status: Status) -> None:
    """The mount stubs (see stubs.py): on the kernel's overlay, sent to the runner, which takes them out of the
    upper dir once this namespace and its mounts are gone (stubs.remove_stubs_in_upper); under fuse-overlayfs
    (an upper in its own format) taken out here, the runner told which parents to prune."""
    if not rootfs.writable:
        return
    if not rootfs.daemons:
        status.send(stubs=[stub.to_json() for stub in rootfs.stubs])
        return
    rf.unmount_stub_targets(rootfs)
    status.send(restored=remove_stubs("/", rootfs.stubs))


def setup_container(spec: ContainerSpec, host_resolv: str | None,
                    premounted: tuple[rf.HostPaths, str, rf.Rootfs] | None = None) -> rf.Rootfs:
    """Mounts, hostname, pivot_root and working directory; raises OSError with the step's name."""
    if premounted is None:
        host = rf.HostPaths(spec)
        scratch = rf.mount_scratch()
        rootfs = rf.mount_overlay(host, scratch)
    else:
        host, scratch, rootfs = premounted
    rf.mount_proc_dev_sys(rootfs, sysfs=spec.sysfs, insecure=spec.insecure)
    rf.mount_user(rootfs, spec.mounts, host.binds, host.overlays, spec.snapshotter == "fuse-overlayfs")
    rf.mount_generated_files(rootfs, spec, scratch, host_resolv)
    host.close()
    # A missing working directory is created and stays in the layer, as docker does for WORKDIR.
    try:
        ensure_path(rootfs.root, spec.cwd, directory=True)
    except OSError as exc:
        raise OSError(exc.errno, f"creating working directory {spec.cwd}: {exc.strerror}") from exc
    if not rootfs.writable:
        rf.make_read_only(rootfs)
    sc.sethostname(spec.hostname)
    rf.pivot_into(rootfs.root)
    try:
        os.chdir(spec.cwd)
    except OSError as exc:
        raise OSError(exc.errno, f"changing to working directory {spec.cwd}: {exc.strerror}") from exc
    return rootfs


def run_command(spec: ContainerSpec, user: ExecUser, env: list[str], status: Status,
                last_cap: int) -> tuple[int, int | None]:
    """Fork and exec the command, then reap until it exits; (exit code, signal)."""
    err_r, err_w = os.pipe()  # close-on-exec: EOF without data means the exec succeeded
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        _exec_command(spec, user, env, err_w, last_cap)
    os.close(err_w)
    _forward_signals_to(pid)
    failure = b""
    while chunk := os.read(err_r, 4096):
        failure += chunk
    os.close(err_r)
    if failure:
        status.send(error=failure.decode(errors="replace"))
    else:
        status.send(started=True)
    code, sig = _reap(pid)
    return code, sig


def _reap(main_pid: int) -> tuple[int, int | None]:
    """Reap every child until `main_pid` exits, then kill and reap the rest (docker semantics)."""
    result: tuple[int, int | None] = (EXIT_SETUP, None)
    while True:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            return result
        if pid == main_pid:
            result = exit_code(wait_status)
            break
    while True:  # kill again after each reap: a fork bomb may fork between a kill and the next wait
        try:
            os.kill(-1, signal.SIGKILL)  # from PID 1: every other process of this PID namespace
        except ProcessLookupError:
            pass
        try:
            os.wait()
        except ChildProcessError:
            return result


def _exec_command(spec: ContainerSpec, user: ExecUser, env: list[str], err_w: int, last_cap: int) -> NoReturn:
    """In the command's process: new session, drop to USER and docker's capabilities, find argv[0], confine, exec."""
    try:
        os.setsid()  # no controlling terminal: /dev/tty and TIOCSTI on an inherited terminal fail
        for signum in FORWARDED_SIGNALS + RESTORED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        if spec.tty:  # `run -it`: stdin is a pseudo-terminal; make it this (new) session's, so ^C reaches the command
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # Bounding set first: dropping needs CAP_SETPCAP, which a non-root uid no longer has.
        if not spec.insecure:
            capabilities.restrict_bounding_set(set(DEFAULT_CAPABILITIES.values()), last_cap)
        if not setgroups_denied():  # rootless with a single id: the supplementary groups cannot change
            os.setgroups(list(user.groups))
        os.setgid(user.gid)
        os.setuid(user.uid)
        argv, environ = exec_arguments(spec.argv, env)  # first: a NUL byte would break the PATH search too
        path = find_executable(spec.argv[0], spec.env_value("PATH", DEFAULT_PATH) or "")
        if not spec.insecure:
            _confine()
        try:
            os.execve(path, argv, environ)
        except OSError as exc:
            code = EXIT_NOT_FOUND if exc.errno == 2 else EXIT_CANNOT_EXEC
            raise ExecError(f"exec {path}: {(exc.strerror or str(exc)).lower()}", code) from exc
    except ExecError as exc:
        os.write(err_w, str(exc).encode())
        os._exit(exc.code)
    except OSError as exc:
        os.write(err_w, f"switching to user {spec.user or 'root'}: {exc.strerror}".encode())
        os._exit(EXIT_SETUP)
    except BaseException as exc:  # noqa: BLE001 - never return into the copy of PID 1's code
        os.write(err_w, f"starting the command: {type(exc).__name__}: {exc}".encode())
        os._exit(EXIT_SETUP)


def _confine() -> None:
    """no_new_privs and docker's seccomp filter (compiled before the fork: prepare); ExecError if either fails."""
    try:
        sc.set_no_new_privs()
        sc.set_seccomp_filter(seccomp.program(RUN_CAPABILITIES))
    except OSError as exc:
        raise ExecError(f"confining the command (no_new_privs, seccomp): {describe(exc)}", EXIT_SETUP) from exc


if __name__ == "__main__":
    main(sys.argv[1:])
