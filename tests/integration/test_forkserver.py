"""The step helpers' fork server (builder/sandbox/forkserver.py), for real: a child must be what an exec'd
`python -m <module>` would be (descriptors at the same numbers and no others, exit codes, signals), killable
and waitable like a Popen, and nothing may outlive the builder, even when it is SIGKILLed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.sandbox.forkserver import ForkServer, memfd, read_memfd
from tests.integration.conftest import REPO

ENV = {"PATH": os.defpath, "PYTHONPATH": str(REPO)}


def alive(pid: int) -> bool:
    """Running, or a zombie nobody reaped."""
    return Path(f"/proc/{pid}/stat").exists()


def gone(pids: list[int], timeout: float = 60.0) -> bool:
    """True once every pid has exited; the timeout is a guard against a hang (a loaded machine needs seconds)."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not any(alive(p) for p in pids)


@pytest.fixture
def server():
    server = ForkServer("tests.integration.forkprobe", env=ENV)
    yield server
    zygote = server.parent_pid
    server.close()
    assert gone([zygote])


def test_a_child_gets_its_descriptors_at_the_same_numbers_and_nothing_else(server):
    stdin = memfd("forkserver-test", b"the spec")
    stdout, stderr, extra = (memfd("forkserver-test") for _ in range(3))
    passed = os.dup2(extra, 77, inheritable=False)
    try:
        child = server.spawn("probe", ["report", "77"], stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=(77,))
        assert child.wait(10) == 0, read_memfd(stderr)
        report = json.loads(read_memfd(stdout))
        assert report["fds"] == [0, 1, 2, 77]  # the zygote's control socket and other children's sockets are not
        assert all(report["inheritable"])
        assert report["ppid"] == server.parent_pid  # the zygote: what a helper dying with its parent checks
        assert report["args"] == ["report", "77"]
        assert report["stdin"] == "the spec"
        assert report["sigint_default"]  # the zygote ignores SIGINT; its children must not
        assert report["comm"] == "pybuild-probe"
        assert read_memfd(passed) == b"written to 77\n"
    finally:
        for fd in (stdin, stdout, stderr, extra, passed):
            os.close(fd)


@pytest.mark.parametrize("args, code", [(["exit", "3"], 3), (["sys.exit", "4"], 4), (["exit", "0"], 0),
                                        (["raise"], 1)])
def test_exit_codes_are_those_of_an_exec_d_interpreter(server, args, code):
    err = memfd("forkserver-test")
    try:
        child = server.spawn("probe", args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        assert child.wait(10) == code
        assert child.returncode == code
        if args == ["raise"]:
            assert b"RuntimeError: probe failed on purpose" in read_memfd(err)
    finally:
        os.close(err)


def test_wait_times_out_like_popen_and_kill_uses_the_pidfd(server):
    out = memfd("forkserver-test")
    try:
        child = server.spawn("probe", ["sleep", "30"], stdin=subprocess.DEVNULL, stdout=out, stderr=None)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(0.2)
        assert alive(child.pid) and read_memfd(out) == b"sleeping\n"
        child.kill()
        assert child.wait(30) == -signal.SIGKILL  # the child sleeps 30 s: only the kill ends it this soon
        assert gone([child.pid])
        child.kill()  # idempotent once reaped
    finally:
        os.close(out)


def test_spawns_from_many_threads_at_once(server):
    codes: dict[int, int] = {}

    def work(index: int) -> None:
        child = server.spawn("probe", ["exit", str(index)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        codes[index] = child.wait(30)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert codes == {i: i for i in range(12)}


def test_close_kills_the_children_still_running_and_stops_the_zygote():
    server = ForkServer("tests.integration.forkprobe", env=ENV)
    child = server.spawn("probe", ["sleep", "60"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    zygote = server.parent_pid
    server.close()
    assert gone([zygote, child.pid])
    assert child.wait(5) == -signal.SIGKILL
    server.close()  # idempotent


def test_a_dead_zygote_is_a_clear_error():
    server = ForkServer("tests.integration.forkprobe", env=ENV)
    try:
        os.kill(server.parent_pid, signal.SIGKILL)
        with pytest.raises(OSError, match="^.*the step helpers' fork server has exited$"):
            server.spawn("probe", ["exit", "0"], stdin=None, stdout=None, stderr=None)
    finally:
        server.close()


def test_a_zygote_that_cannot_start_says_why():
    server = ForkServer("tests.integration.no_such_module", env=ENV)
    with pytest.raises(OSError, match=r"did not start: .*No module named tests.integration.no_such_module"):
        server.spawn("probe", ["exit", "0"], stdin=None, stdout=None, stderr=None)
    server.close()


BUILDER = """
import subprocess, sys
from builder.sandbox.forkserver import ForkServer, memfd, read_memfd
server = ForkServer("tests.integration.forkprobe", env={"PYTHONPATH": sys.argv[1]})
child = server.spawn("probe", ["sleep", "100"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
print(server.parent_pid, child.pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_sigkill_of_the_builder_takes_the_zygote_and_its_children_down():
    builder = subprocess.Popen([sys.executable, "-c", BUILDER, str(REPO)], cwd=REPO, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
    try:
        zygote, child = map(int, builder.stdout.readline().split())
        assert alive(zygote) and alive(child)
    finally:
        builder.kill()
        builder.wait()
        builder.stdin.close()
        builder.stdout.close()
    assert gone([zygote, child])


def test_a_build_runs_its_steps_in_children_of_its_fork_server(pybuild, busybox_image, tmp_path):
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox\nCOPY a.txt /a.txt\n"
        "RUN cat /proc/1/comm > /first && cat /proc/1/cmdline | tr '\\0' ' ' > /first-cmdline\n"
        "COPY a.txt /b.txt\nRUN cat /proc/1/comm > /second && cat /proc/1/cmdline | tr '\\0' ' ' > /second-cmdline\n")
    pybuild("--no-cache", "-t", "me/forked", str(tmp_path))
    shown = pybuild("run", "--rm", "me/forked", "sh", "-c",
                    "cat /first /second; cat /first-cmdline; echo; cat /second-cmdline; echo; cat /a.txt /b.txt").stdout
    lines = shown.decode().splitlines()
    assert lines[:2] == ["pybuild-init", "pybuild-init"]  # PID 1 of each RUN is a forked init
    assert "-m builder.ops.helpers " in lines[2] and lines[2] == lines[3]  # of the same server
    assert lines[4:] == ["a", "a"]  # and the COPYs, forked the same way, did their work


@pytest.mark.slow  # a real helpers zygote: ~1-2 s of interpreter start and imports
def test_the_build_zygote_compiles_the_run_filter_in_a_child_once_ready():
    """builder.ops.helpers: the RUN seccomp filter is compiled by a child of the zygote, started at its "ready", so
    the build's first RUN takes the bytes instead of compiling (seccomp.Precompiled)."""
    from builder.ops.helpers import fork_server

    helpers = fork_server()
    zygote = helpers.parent_pid
    try:
        deadline = time.monotonic() + 60  # a guard: the zygote forks right after "ready", the child names itself
        while not (children := Path(f"/proc/{zygote}/task/{zygote}/children").read_text().split()) \
                or Path(f"/proc/{children[0]}/comm").read_text().strip() != "pybuild-seccomp":
            assert time.monotonic() < deadline, f"no pybuild-seccomp child of the zygote: {children}"
            time.sleep(0.001)
        assert len(children) == 1  # running or finished, it is only reaped when the first RUN takes its result
    finally:
        helpers.close()
    assert gone([zygote, *map(int, children)])
