"""The RUN seccomp profile as data, and the BPF program libseccomp makes of it for each architecture."""
from __future__ import annotations

import errno
import struct

import pytest

from builder.sandbox import seccomp
from builder.sandbox.capabilities import DEFAULT_CAPABILITIES

RUN_CAPS = set(DEFAULT_CAPABILITIES)
AUDIT_ARCH = {"x86_64": 0xC000003E, "x86": 0x40000003, "aarch64": 0xC00000B7, "arm": 0x40000028}


def allowed(rules) -> set[str]:
    return {name for name, action, args in rules if action == seccomp.ACT_ALLOW and not args}


def test_a_run_is_denied_what_docker_denies_to_its_default_capabilities():
    names = allowed(seccomp.rules("x86_64", RUN_CAPS))
    for denied in ("mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "io_uring_setup",
                   "perf_event_open", "userfaultfd", "bpf", "kexec_load", "init_module", "clone", "clone3",
                   "open_by_handle_at", "reboot", "syslog", "socket", "personality"):
        assert denied not in names, denied
    for needed in ("read", "execve", "fork", "chown", "mknod", "chroot", "arch_prctl", "ptrace"):
        assert needed in names, needed


def test_clone_without_namespace_flags_and_clone3_enosys_unless_sys_admin():
    rules = seccomp.rules("x86_64", RUN_CAPS)
    assert ("clone", seccomp.ACT_ALLOW, ((0, seccomp.CMP_MASKED_EQ, seccomp.CLONE_NAMESPACE_MASK, 0),)) in rules
    assert ("clone3", seccomp.act_errno(errno.ENOSYS), ()) in rules
    admin = seccomp.rules("x86_64", RUN_CAPS | {"CAP_SYS_ADMIN"})
    assert {"clone", "clone3", "mount", "unshare"} <= allowed(admin)
    assert not any(name == "clone3" and action != seccomp.ACT_ALLOW for name, action, _ in admin)


def test_socket_families_and_personalities_are_restricted():
    rules = seccomp.rules("x86_64", RUN_CAPS)
    sockets = [args[0] for name, _, args in rules if name == "socket"]
    assert sockets == [(0, seccomp.CMP_LT, 38, 0), (0, seccomp.CMP_EQ, 39, 0), (0, seccomp.CMP_GT, 40, 0)]
    assert sorted(args[0][2] for name, _, args in rules if name == "personality") == sorted(seccomp.PERSONALITIES)


def test_architecture_extras_go_to_their_own_architecture_only():
    assert "arch_prctl" in allowed(seccomp.rules("x86_64", RUN_CAPS))
    arm = allowed(seccomp.rules("aarch64", RUN_CAPS))
    assert "arch_prctl" not in arm and "set_tls" in arm


def evaluate(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Run a classic-BPF seccomp program on one system call (the instructions libseccomp emits); its action."""
    code = [struct.unpack("<HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    words = {0: nr, 4: arch}
    for index, value in enumerate((*args, 0, 0, 0, 0, 0, 0)[:6]):
        words[16 + 8 * index], words[20 + 8 * index] = value & 0xFFFFFFFF, value >> 32
    a = x = 0
    memory = [0] * 16
    pc = 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == 0x20:
            a = words.get(k, 0)
        elif op == 0x60:
            a = memory[k]
        elif op == 0x02:
            memory[k] = a
        elif op in (0x15, 0x25, 0x35, 0x45):
            taken = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[op]
            pc += jt if taken else jf
        elif op == 0x05:
            pc += k
        elif op == 0x06:
            return k
        elif op == 0x54:
            a &= k
        elif op == 0x07:
            x = a
        elif op == 0x87:
            a = x
        else:
            raise AssertionError(f"BPF instruction {op:#x} is not handled by this test")


EPERM = seccomp.act_errno(errno.EPERM)
ENOSYS = seccomp.act_errno(errno.ENOSYS)
# (arch, {syscall name: its number on that architecture}): the kernel's tables, written out independently
NUMBERS = {
    "x86_64": {"read": 0, "keyctl": 250, "mount": 165, "unshare": 272, "clone3": 435, "arch_prctl": 158,
               "clone": 56, "socket": 41},
    "x86": {"read": 3, "keyctl": 288, "mount": 21, "unshare": 310},
    "aarch64": {"read": 63, "keyctl": 219, "mount": 40, "unshare": 97, "clone3": 435, "clone": 220,
                "socket": 198},
    "arm": {"read": 3, "keyctl": 311, "mount": 21, "unshare": 337},
}


@pytest.mark.parametrize("machine, compat", [("x86_64", "x86"), ("aarch64", "arm")])
def test_the_program_resolves_each_name_per_architecture(machine, compat):
    try:
        program = seccomp.compile_program(RUN_CAPS, machine)
    except seccomp.SeccompError as exc:
        pytest.skip(str(exc))
    assert len(program) % 8 == 0 and len(program) // 8 < 4096  # the kernel's BPF_MAXINSNS
    for arch in (machine, compat):
        numbers = NUMBERS[arch]
        assert evaluate(program, numbers["read"], AUDIT_ARCH[arch]) == seccomp.ACT_ALLOW, arch
        for denied in ("keyctl", "mount", "unshare"):
            assert evaluate(program, numbers[denied], AUDIT_ARCH[arch]) == EPERM, (arch, denied)
    numbers = NUMBERS[machine]
    arch = AUDIT_ARCH[machine]
    assert evaluate(program, numbers["clone3"], arch) == ENOSYS
    assert evaluate(program, numbers["clone"], arch, (0x11,)) == seccomp.ACT_ALLOW  # SIGCHLD | a plain fork
    assert evaluate(program, numbers["clone"], arch, (0x10000000 | 0x11,)) == EPERM  # CLONE_NEWUSER
    assert evaluate(program, numbers["socket"], arch, (2,)) == seccomp.ACT_ALLOW  # AF_INET
    assert evaluate(program, numbers["socket"], arch, (40,)) == EPERM  # AF_VSOCK
    for abi in (machine, compat):  # runc's stub: a syscall newer than the profile gets ENOSYS, not EPERM
        assert evaluate(program, 1000, AUDIT_ARCH[abi]) == ENOSYS, abi
    if machine == "aarch64":  # arm's private calls (0xf0000 and up): set_tls allowed, beyond them ENOSYS
        assert evaluate(program, 0xF0005, AUDIT_ARCH["arm"]) == seccomp.ACT_ALLOW
        assert evaluate(program, 0xF0100, AUDIT_ARCH["arm"]) == ENOSYS
    if machine == "x86_64":  # x32 shares x86_64's AUDIT_ARCH, its numbers start at 0x40000000
        assert evaluate(program, 0x40000000, arch) == seccomp.ACT_ALLOW  # x32 read
        assert evaluate(program, 0x40000000 + 250, arch) == EPERM  # x32 keyctl
        assert evaluate(program, 0x40000000 + 1000, arch) == ENOSYS
    other = {"x86_64": "aarch64", "aarch64": "x86_64"}[machine]
    assert evaluate(program, 0, AUDIT_ARCH[other]) not in (seccomp.ACT_ALLOW, EPERM)  # a foreign arch is killed


def test_program_is_compiled_once_per_capability_set():
    first = seccomp.program(RUN_CAPS)
    assert seccomp.program(set(RUN_CAPS)) is first


def test_without_libseccomp_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(seccomp, "LIBRARY", "libseccomp-missing-for-this-test.so.2")
    with pytest.raises(seccomp.SeccompError, match="install libseccomp2"):
        seccomp.compile_program(RUN_CAPS)


def test_a_program_compiled_ahead_in_a_child_is_taken_as_this_process_own(monkeypatch):
    """The zygote forks the compilation once it is ready (Precompiled); its first RUN takes the bytes instead of
    spending ~25-40 ms in libseccomp. A process that compiles nothing itself gets the same program."""
    caps = RUN_CAPS | {"CAP_SYS_PTRACE"}  # a set no other test has compiled in this process
    expected = seccomp.compile_program(caps)
    ahead = seccomp.Precompiled(caps)

    def refuse(*_args):
        raise AssertionError("compiled again in the parent")

    monkeypatch.setattr(seccomp, "compile_program", refuse)
    monkeypatch.setattr(seccomp, "_programs", {})
    ahead.take()
    assert seccomp.program(caps) == expected


def test_a_compilation_ahead_that_fails_leaves_the_work_to_the_first_run(monkeypatch):
    caps = RUN_CAPS | {"CAP_SYS_TIME"}
    monkeypatch.setattr(seccomp, "_programs", {})
    monkeypatch.setattr(seccomp, "LIBRARY", "libseccomp-missing-for-this-test.so.2")
    ahead = seccomp.Precompiled(caps)  # the child inherits the missing library and fails
    ahead.take()
    assert seccomp._programs == {}
    monkeypatch.undo()
    monkeypatch.setattr(seccomp, "_programs", {})
    assert seccomp.program(caps) == seccomp.compile_program(caps)
