"""Rootless mode: a non-root pybuild enters a user namespace (and a mount namespace) where it is root.

As rootlesskit and `podman unshare` do, with no setuid helper of our own: main() calls enter() before any thread
exists. It forks; the child unshares CLONE_NEWUSER|CLONE_NEWNS and waits on a pipe while the parent writes its id
maps with the setuid `newuidmap`/`newgidmap` (Debian's uidmap package) from the user's ranges in /etc/subuid and
/etc/subgid:

    0 -> the user's own id,  1..N -> the subordinate range (so `chown 1234`, apt's `_apt`, ... work)

Without ranges (or without the tools) the parent writes a single-id map itself (0 -> the user; setgroups denied)
and warns once: files owned by other ids cannot be made. The child then becomes uid/gid 0, makes its mounts
private and carries on with the command; the parent only waits (forwarding SIGTERM/SIGHUP) and exits with the
child's status. The child dies with the parent (PR_SET_PDEATHSIG), so nothing outlives the command.

Root (euid 0) never enters: every path here is a no-op for it.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from dataclasses import dataclass

from builder.errors import PybuildError

CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
_entered: dict[str, int] = {}  # "uid"/"gid": the user's ids outside, once enter() has run in this process


@dataclass(frozen=True, slots=True)
class IdMap:
    """One line of /proc/PID/uid_map: `inside outside count`."""

    inside: int
    outside: int
    count: int


def entered() -> bool:
    """Did this process enter pybuild's user namespace (rootless mode)?"""
    return bool(_entered)


def run_notice(slirp: bool) -> None:
    """Once per process: what RUN's network and limits are in rootless mode."""
    if not _entered.get("noticed"):
        _entered["noticed"] = 1
        network = ("slirp4netns (user-mode NAT, shared by the build's RUNs; not the host's 127.0.0.1)" if slirp else
                   "an isolated namespace with only loopback (install slirp4netns for user-mode NAT)")
        print(f"notice: rootless mode: RUN's default network is {network}; --network host shares the host's, "
              "the bridge needs root; RUN gets no cgroup (--memory, --pids-limit, --cpu-* are not applied)",
              file=sys.stderr)


def outside_uid() -> int:
    """The user's uid outside the namespace (os.getuid() when not rootless)."""
    return _entered.get("uid", os.getuid())


def subordinate_ranges(path: str, name: str, ident: int) -> list[tuple[int, int]]:
    """(start, count) ranges of `name` or its numeric id in an /etc/subuid-style file; [] when it has none."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (name, str(ident)) and parts[1].isdigit() and parts[2].isdigit():
            if int(parts[2]) > 0:
                ranges.append((int(parts[1]), int(parts[2])))
    return ranges


def id_maps(ident: int, ranges: list[tuple[int, int]]) -> list[IdMap]:
    """0 → the user's id, then the subordinate ranges from 1 on."""
    maps, inside = [IdMap(0, ident, 1)], 1
    for start, count in ranges:
        maps.append(IdMap(inside, start, count))
        inside += count
    return maps


def unavailable_reason() -> str:
    """Why an unprivileged user namespace could not be made, with what would work."""
    def read(path: str) -> str | None:
        try:
            with open(path, encoding="ascii") as handle:
                return handle.read().strip()
        except OSError:
            return None
    if read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return "unprivileged user namespaces are disabled: set kernel.unprivileged_userns_clone=1 (sysctl)"
    if read("/proc/sys/user/max_user_namespaces") == "0":
        return "user namespaces are disabled: set user.max_user_namespaces to a positive number (sysctl)"
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor forbids unprivileged user namespaces: set kernel.apparmor_restrict_unprivileged_userns=0 "
                "or give pybuild's interpreter an AppArmor profile with `userns`")
    return ("this system does not let an unprivileged process make a user namespace (in a container: run it with "
            "user namespaces allowed, e.g. without a seccomp profile that blocks unshare)")


class RootlessError(PybuildError):
    """Rootless mode cannot be entered."""

    reference = "rootless"


def enter() -> None:
    """For euid != 0: continue this process as root of a fresh user + mount namespace (see the module docstring)."""
    if os.geteuid() == 0 or _entered:
        return
    import shutil  # here, not at the top: root's start-up never pays for these
    import threading

    if threading.active_count() != 1:
        raise RootlessError("rootless mode: a user namespace can only be entered before any thread starts")
    uid, gid = os.getuid(), os.getgid()
    name = _user_name(uid)
    uid_ranges, gid_ranges = subordinate_ranges(SUBUID, name, uid), subordinate_ranges(SUBGID, name, gid)
    helpers = shutil.which("newuidmap") and shutil.which("newgidmap")
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        _child(parent, ready_w, go_r)
        _entered.update(uid=uid, gid=gid)
        return
    os.close(ready_w)
    os.close(go_r)
    sys.exit(_parent(pid, ready_r, go_w, uid, gid, uid_ranges if helpers else [], gid_ranges if helpers else [],
                     name, bool(helpers)))


def _user_name(uid: int) -> str:
    import pwd  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _child(parent: int, ready_w: int, go_r: int) -> None:
    """In the child: unshare, wait for the maps, become root of the namespace; exits on failure."""
    import ctypes  # lazy: saves ~2 ms at start-up

    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.unshare.argtypes, _libc.unshare.restype = [ctypes.c_int], ctypes.c_int
    _libc.prctl.argtypes, _libc.prctl.restype = [ctypes.c_int] + [ctypes.c_ulong] * 4, ctypes.c_int
    _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    _libc.mount.restype = ctypes.c_int
    result = _libc.unshare(ctypes.c_int(CLONE_NEWUSER | CLONE_NEWNS))
    errno_ = ctypes.get_errno() if result < 0 else 0
    os.write(ready_w, b"ok" if result == 0 else f"unshare: {errno.errorcode.get(errno_, errno_)}".encode())
    os.close(ready_w)
    answer = os.read(go_r, 4096)
    os.close(go_r)
    if result != 0 or answer != b"ok":
        os._exit(1)  # the parent reports it
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as exc:
        _die(f"becoming root of the user namespace: {exc.strerror}")
    try:
        os.setgroups([])
    except OSError:
        pass  # a single-id map denies setgroups: the supplementary groups stay (unmapped, as nogroup)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the credential change, which clears it
    if os.getppid() != parent:
        os._exit(1)  # the parent is gone: nobody to report to
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        _die(f"making the mount namespace private: {os.strerror(ctypes.get_errno())}")


def _die(message: str) -> None:
    print(f"error: rootless mode: {message}", file=sys.stderr)
    os._exit(1)


def _parent(pid: int, ready_r: int, go_w: int, uid: int, gid: int, uid_ranges: list, gid_ranges: list,
            name: str, helpers: bool) -> int:
    """In the parent: write the child's maps, then wait for it; returns the exit code."""
    ready = os.read(ready_r, 4096)
    os.close(ready_r)
    try:
        if ready != b"ok":
            raise RootlessError(f"rootless mode: cannot create a user namespace ({ready.decode()}): "
                                f"{unavailable_reason()}", hint="or run pybuild as root")
        _write_maps(pid, uid, gid, uid_ranges, gid_ranges, name, helpers)
    except RootlessError:
        os.write(go_w, b"no")
        os.close(go_w)
        os.waitpid(pid, 0)
        raise  # main() renders it
    os.write(go_w, b"ok")
    os.close(go_w)
    return _wait(pid)


def _write_maps(pid: int, uid: int, gid: int, uid_ranges: list, gid_ranges: list, name: str, helpers: bool) -> None:
    if uid_ranges and gid_ranges:
        import subprocess  # lazy: saves ~4 ms at start-up

        started = []  # both at once: each is a setuid exec, paid on every command
        for tool, maps in (("newuidmap", id_maps(uid, uid_ranges)), ("newgidmap", id_maps(gid, gid_ranges))):
            argv = [tool, str(pid)] + [str(v) for m in maps for v in (m.inside, m.outside, m.count)]
            started.append((tool, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                                   text=True)))
        for tool, proc in started:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RootlessError(f"rootless mode: {tool} failed: {err.strip() or proc.returncode}",
                                    hint=f"check the lines for {name} in /etc/subuid and /etc/subgid")
        return
    why = "newuidmap/newgidmap are missing (Debian: apt-get install uidmap)" if not helpers else \
        f"{name} has no subordinate ids in /etc/subuid and /etc/subgid"
    print(f"warning: rootless mode with a single id: {why}; only root (you) exists in RUN, so files owned by "
          f"other users or groups (chown, apt's _apt, images with such files) fail. To add ranges, as root: "
          f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}", file=sys.stderr)
    try:
        for file, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1\n"), ("gid_map", f"0 {gid} 1\n")):
            with open(f"/proc/{pid}/{file}", "w", encoding="ascii") as handle:
                handle.write(text)
    except OSError as exc:
        raise RootlessError(f"rootless mode: writing the single-id map: {exc.strerror}") from exc


def _wait(pid: int) -> int:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C reaches the child, in the same process group
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)
        except InterruptedError:
            continue
