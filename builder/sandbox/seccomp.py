"""docker's default seccomp profile for a RUN, compiled through libseccomp into a BPF program.

The rules below are moby's profiles/seccomp/default.json as plain data: everything not allowed fails with EPERM;
the syscalls that need a capability a RUN does not have (docker's default set, capabilities.py) stay denied;
clone may not create namespaces and clone3 fails with ENOSYS (so libc falls back to clone, whose flags the
filter can see); personality, socket families and per-architecture extras are restricted as docker does.

libseccomp (libseccomp.so.2) resolves the names per architecture (native plus the compat ones docker adds:
x86 and x32 on x86_64, arm on aarch64) and exports the program; `program()` does that once per process (the
fork server's zygote has it before forking, so a RUN only installs the bytes: syscalls.set_seccomp_filter). The
zygote has a child compile it (`Precompiled`) while the build's first steps run, off the first RUN's clock.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct

from builder.sandbox import syscalls

LIBRARY = "libseccomp.so.2"

# Allowed for every RUN, on every architecture that has the name (unknown names are skipped).
ALLOWED = tuple("""
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
    clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
    clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
    epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2
    execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
    fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork
    fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex
    futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64
    getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid
    getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
    get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32
    getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
    io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill
    landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
    listen listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
    map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
    mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
    mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall
    munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
    pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv
    preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
    readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
    removexattrat rename renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending
    rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
    rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
    sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
    sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget
    semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
    setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32
    setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt
    set_thread_area set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown
    sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs
    statfs64 statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
    timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64
    ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice
    wait4 waitid waitpid write writev
    process_vm_readv process_vm_writev ptrace
""".split())  # the last line: docker allows these from kernel 4.8 on (ptrace can no longer bypass seccomp)

# Extras for a native architecture (os.uname().machine).
ARCH_ALLOWED = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush",
                "set_tls"),
}
# The compat architectures docker's profile adds to each native one (libseccomp names).
SUB_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",)}

# Allowed only to a RUN holding the capability (docker evaluates these against the container's capability set).
CAPABILITY_ALLOWED = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": ("bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                      "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount",
                      "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
                      "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare"),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}
# Every CLONE_NEW* flag (and CLONE_NEWTIME's neighbour bits docker masks): clone must not make namespaces.
CLONE_NAMESPACE_MASK = 0x7E020000
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)  # PER_LINUX, UNAME26, PER_LINUX32 (+UNAME26), query
AF_ALG, AF_VSOCK = 38, 40  # socket families docker denies (kernel crypto API, VM sockets)

# classic BPF (linux/filter.h, linux/seccomp.h) for enosys_prefix
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGT_K, BPF_JGE_K, BPF_JA, BPF_RET_K = 0x20, 0x15, 0x25, 0x35, 0x05, 0x06
OFFSET_NR, OFFSET_ARCH = 0, 4  # struct seccomp_data
AUDIT_X86_64, X32_SYSCALL_BIT = 0xC000003E, 0x40000000
# Where an ABI's syscall numbers start: x32's carry a bit of their own, arm has private ones from 0xf0000 on.
NUMBER_RANGES = {"x32": (X32_SYSCALL_BIT,), "arm": (0, 0xF0000)}

# libseccomp's ABI (seccomp.h)
ACT_ALLOW = 0x7FFF0000
CMP_LT, CMP_EQ, CMP_GT, CMP_MASKED_EQ = 2, 4, 6, 7
ATTR_OPTIMIZE = 8  # SCMP_FLTATR_CTL_OPTIMIZE: 2 = a binary tree of syscall numbers


def act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class SeccompError(OSError):
    """libseccomp is missing or refused the profile."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as exc:
        raise SeccompError(errno.ENOENT, f"{LIBRARY} not found (install libseccomp2): {exc}") from exc
    ctx = ctypes.c_void_p
    for name, restype, argtypes in (
            ("seccomp_init", ctx, [ctypes.c_uint32]),
            ("seccomp_release", None, [ctx]),
            ("seccomp_arch_add", ctypes.c_int, [ctx, ctypes.c_uint32]),
            ("seccomp_arch_remove", ctypes.c_int, [ctx, ctypes.c_uint32]),
            ("seccomp_arch_native", ctypes.c_uint32, []),
            ("seccomp_arch_resolve_name", ctypes.c_uint32, [ctypes.c_char_p]),
            ("seccomp_attr_set", ctypes.c_int, [ctx, ctypes.c_int, ctypes.c_uint32]),
            ("seccomp_syscall_resolve_name", ctypes.c_int, [ctypes.c_char_p]),
            ("seccomp_syscall_resolve_name_arch", ctypes.c_int, [ctypes.c_uint32, ctypes.c_char_p]),
            ("seccomp_rule_add_array", ctypes.c_int, [ctx, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                                      ctypes.POINTER(_ArgCmp)]),
            ("seccomp_export_bpf", ctypes.c_int, [ctx, ctypes.c_int])):
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def rules(machine: str, capabilities: set[str]) -> list[tuple[str, int, tuple[tuple[int, int, int, int], ...]]]:
    """(syscall name, action, ((arg, op, a, b), ...)) for `machine` and a RUN holding `capabilities`."""
    allow = [*ALLOWED, *ARCH_ALLOWED.get(machine, ())]
    for cap, names in CAPABILITY_ALLOWED.items():
        if cap in capabilities:
            allow += names
    out: list[tuple[str, int, tuple[tuple[int, int, int, int], ...]]] = [
        (name, ACT_ALLOW, ()) for name in dict.fromkeys(allow)]
    if "CAP_SYS_ADMIN" not in capabilities:
        out.append(("clone", ACT_ALLOW, ((0, CMP_MASKED_EQ, CLONE_NAMESPACE_MASK, 0),)))
        out.append(("clone3", act_errno(errno.ENOSYS), ()))
    out += [("personality", ACT_ALLOW, ((0, CMP_EQ, value, 0),)) for value in PERSONALITIES]
    out += [("socket", ACT_ALLOW, ((0, CMP_LT, AF_ALG, 0),)), ("socket", ACT_ALLOW, ((0, CMP_EQ, AF_ALG + 1, 0),)),
            ("socket", ACT_ALLOW, ((0, CMP_GT, AF_VSOCK, 0),))]
    return out


def compile_program(capabilities: set[str], machine: str | None = None) -> bytes:
    """The BPF program (struct sock_filter[]) of docker's profile for a RUN holding `capabilities`: runc's ENOSYS
    stub (enosys_prefix) followed by what libseccomp makes of rules()."""
    machine = machine or os.uname().machine
    lib = _library()
    ctx = lib.seccomp_init(act_errno(errno.EPERM))
    if not ctx:
        raise SeccompError(errno.ENOMEM, "seccomp_init failed")
    try:
        arches = _add_arches(lib, ctx, machine)
        lib.seccomp_attr_set(ctx, ATTR_OPTIMIZE, 2)  # older libseccomp lacks it: a linear filter then
        for name, action, args in rules(machine, capabilities):
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number == -1:  # __NR_SCMP_ERROR: no architecture of libseccomp's knows this name
                continue
            array = (_ArgCmp * max(1, len(args)))(*(_ArgCmp(*a) for a in args))
            result = lib.seccomp_rule_add_array(ctx, action, number, len(args), array)
            if result < 0 and result != -errno.EDOM:  # EDOM: not on this filter's architectures
                raise SeccompError(-result, f"libseccomp refused the rule for {name}: {os.strerror(-result)}")
        return enosys_prefix(_highest_numbers(lib, arches, machine)) + _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _add_arches(lib: ctypes.CDLL, ctx: int, machine: str) -> list[str]:
    """Make the filter cover `machine` (replacing the native architecture when it differs) and its compat arches."""
    if machine != os.uname().machine:  # a filter for another machine (tests): its arches instead of ours
        native = lib.seccomp_arch_native()
        lib.seccomp_arch_add(ctx, lib.seccomp_arch_resolve_name(machine.encode()))
        lib.seccomp_arch_remove(ctx, native)
    for arch in SUB_ARCHES.get(machine, ()):
        token = lib.seccomp_arch_resolve_name(arch.encode())
        if not token or lib.seccomp_arch_add(ctx, token) not in (0, -errno.EEXIST):
            raise SeccompError(errno.EINVAL, f"libseccomp cannot add architecture {arch}")
    return [machine, *SUB_ARCHES.get(machine, ())]


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("pybuild-seccomp")
    try:
        result = lib.seccomp_export_bpf(ctx, fd)
        if result < 0:
            raise SeccompError(-result, f"exporting the seccomp filter: {os.strerror(-result)}")
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _highest_numbers(lib: ctypes.CDLL, arches: list[str], machine: str) -> dict[int, list[tuple[int, int]]]:
    """AUDIT_ARCH → [(first number, highest number this profile names)] per ABI (x32 shares x86_64's AUDIT_ARCH)."""
    names = {*ALLOWED, *ARCH_ALLOWED.get(machine, ()), *(n for ns in CAPABILITY_ALLOWED.values() for n in ns),
             "clone", "clone3", "personality", "socket"}
    ranges: dict[int, list[tuple[int, int]]] = {}
    for arch in arches:
        token = lib.seccomp_arch_resolve_name(arch.encode())
        numbers = [lib.seccomp_syscall_resolve_name_arch(token, name.encode()) for name in names]
        audit = AUDIT_X86_64 if arch == "x32" else token  # libseccomp's tokens are the AUDIT_ARCH values
        firsts = NUMBER_RANGES.get(arch, (0,))
        for first in firsts:
            inside = [n for n in numbers if n >= first and not any(first < f <= n for f in firsts)]
            if inside:
                ranges.setdefault(audit, []).append((first, max(inside)))
    return ranges


def enosys_prefix(ranges: dict[int, list[tuple[int, int]]]) -> bytes:
    """runc's stub: a syscall numbered above every one the profile names on its ABI (one newer than the profile)
    fails with ENOSYS, not EPERM, so that programs fall back as on an older kernel; the rest goes on to the filter."""
    code: list[tuple[int | str, int | str, int | str, int]] = []  # (op, jt, jf, k), jumps to labels resolved below
    for index, (audit, abis) in enumerate(ranges.items()):
        following = f"arch{index + 1}"
        code += [(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH), (BPF_JEQ_K, 0, following, audit), (BPF_LD_W_ABS, 0, 0, OFFSET_NR)]
        abis = sorted(abis, reverse=True)  # highest first: x32 (0x40000000 and up) before the native numbers
        for position, (first, highest) in enumerate(abis):
            if first:
                code.append((BPF_JGE_K, 0, f"abi{index}.{position + 1}", first))
            code.append((BPF_JGT_K, "enosys", following, highest))
            code.append(("label", f"abi{index}.{position + 1}", 0, 0))
        code.append(("label", following, 0, 0))
    code += [(BPF_JA, 0, 0, 1), ("label", "enosys", 0, 0), (BPF_RET_K, 0, 0, act_errno(errno.ENOSYS))]
    labels, position = {}, 0
    for op, jt, _, _ in code:
        if op == "label":
            labels[jt] = position
        else:
            position += 1
    out, position = b"", 0
    for op, jt, jf, k in code:
        if op == "label":
            continue
        jumps = [labels[j] - position - 1 if isinstance(j, str) else j for j in (jt, jf)]
        out += struct.pack("<HBBI", op, jumps[0], jumps[1], k)
        position += 1
    return out


_programs: dict[frozenset[str], bytes] = {}


def program(capabilities: set[str]) -> bytes:
    """compile_program, once per process and capability set (a fork server's children inherit the result)."""
    key = frozenset(capabilities)
    if key not in _programs:
        _programs[key] = compile_program(capabilities)
    return _programs[key]


class Precompiled:
    """`program(capabilities)` compiled in a forked child while this (single-threaded) process goes on; `take()`
    puts its bytes in this process's cache. The fork server's zygote starts one when it is ready and takes it at
    the build's first RUN: libseccomp's ~25-40 ms run on another core while the first steps do, not on that RUN."""

    def __init__(self, capabilities: set[str]) -> None:
        self.key = frozenset(capabilities)
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child; what it writes is checked by take()
            _compile_into(write, read, capabilities)
        os.close(write)
        self.fd = read

    def take(self) -> None:
        """Wait for the child; a program it finished becomes `program()`'s, anything else is left for it to compile."""
        chunks = []
        try:
            while chunk := os.read(self.fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            _, status = os.waitpid(self.pid, 0)
        data = b"".join(chunks)
        if os.waitstatus_to_exitcode(status) == 0 and data and len(data) % 8 == 0:  # whole struct sock_filters
            _programs.setdefault(self.key, data)


def _compile_into(write: int, read: int, capabilities: set[str]) -> None:
    """In Precompiled's child: compile, write the program to `write`, exit 0; exit 1 on any failure."""
    code = 1
    try:
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
        with open("/proc/self/comm", "w") as comm:  # for `ps`: the fork server's children say what they are
            comm.write("pybuild-seccomp")
        os.close(read)
        os.closerange(3, write)  # nothing of the parent's (the zygote's control socket) stays open here
        os.closerange(write + 1, os.sysconf("SC_OPEN_MAX"))
        view = memoryview(compile_program(capabilities))
        while view:
            view = view[os.write(write, view):]
        code = 0
    finally:
        os._exit(code)
