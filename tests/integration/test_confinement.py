"""RUN confinement, for real: docker's seccomp profile, no_new_privs, no terminal, nodev mounts, a cgroup per RUN.

A static C probe (data/confine_probe.c, compiled with gcc at test time) tries what a hostile RUN would; each
attempt must fail while ordinary things (fork/exec, loopback sockets, chown, a shell script) keep working.
"""
from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.sandbox.capabilities import DEFAULT_CAPABILITIES
from builder.sandbox.cgroup import PARENT, RunCgroup, hierarchy, remove_stale
from builder.sandbox.runner import ExitStatus, SandboxError, run
from builder.sandbox.spec import ContainerSpec, Mount, Resources
from tests.integration.conftest import REPO
from tests.integration.test_sandbox import make_busybox_root

PROBE_SOURCE = Path(__file__).parent / "data" / "confine_probe.c"
DENIED = ("unshare-user", "unshare-mount", "keyctl", "add_key", "io_uring_setup", "perf_event_open", "userfaultfd",
          "mount", "ptrace-init", "open-dev-tty", "tiocsti-fd0", "tiocsti-fd1", "tiocsti-fd2", "socket-alg")
ALLOWED = ("loopback", "fork-exec", "chown")


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    """The probe, linked statically so it runs in the busybox image."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    binary = tmp_path_factory.mktemp("probe") / "confine_probe"
    subprocess.run([gcc, "-static", "-O1", "-o", str(binary), str(PROBE_SOURCE)], check=True)
    return binary


@pytest.fixture(scope="module")
def lower(tmp_path_factory, probe) -> Path:
    root = make_busybox_root(tmp_path_factory.mktemp("confine-lower"))
    shutil.copy2(probe, root / "bin" / "probe")
    return root


def spec(lower: Path, tmp: Path, script: str, **changes) -> ContainerSpec:
    for name in ("upper", "work"):
        (tmp / name).mkdir(exist_ok=True)
    fields = dict(argv=("/bin/sh", "-c", script), lowerdirs=(str(lower),), upperdir=str(tmp / "upper"),
                  workdir=str(tmp / "work"), env=("PATH=/bin",))
    fields.update(changes)
    return ContainerSpec(**fields)


def output(container: ContainerSpec, **io) -> str:
    out: list[bytes] = []
    err: list[bytes] = []
    status = run(container, stdout=out.append, stderr=err.append, **{"stdin": subprocess.DEVNULL, **io})
    assert status == ExitStatus(0), f"{status}: {b''.join(err).decode()}"
    return b"".join(out).decode()


def probe_results(text: str) -> dict[str, str]:
    return {line.split()[0]: line.split(None, 1)[1] for line in text.splitlines() if len(line.split()) >= 2}


def status_fields(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def capability_mask(numbers) -> str:
    return f"{sum(1 << n for n in numbers):016x}"


# --- seccomp, no_new_privs, capabilities -------------------------------------------------------------

def test_a_run_gets_seccomp_no_new_privs_and_dockers_capabilities(lower, tmp_path):
    fields = status_fields(output(spec(lower, tmp_path, "cat /proc/self/status")))
    assert fields["Seccomp"] == "2"
    assert fields["NoNewPrivs"] == "1"
    assert fields["CapEff"] == capability_mask(DEFAULT_CAPABILITIES.values())


def test_insecure_means_every_capability_no_seccomp_no_no_new_privs(lower, tmp_path):
    text = output(spec(lower, tmp_path, "cat /proc/self/status; PROBE_NO_PTRACE=1 /bin/probe", insecure=True))
    fields = status_fields(text)
    assert fields["Seccomp"] == "0"
    assert fields["NoNewPrivs"] == "0"
    # every capability the builder has (this machine's own bounding set may lack some)
    assert fields["CapEff"] == status_fields(Path("/proc/self/status").read_text())["CapBnd"]
    assert int(fields["CapEff"], 16) > int(capability_mask(DEFAULT_CAPABILITIES.values()), 16)
    assert probe_results(text)["unshare-user"] == "allowed"  # what the profile would have denied


def test_the_probe_is_denied_everything_hostile_and_allowed_the_ordinary(lower, tmp_path):
    mounts = (Mount(type="tmpfs", source="tmpfs", target="/scratch"),
              Mount(type="bind", source=str(tmp_path / "bound"), target="/bound"))
    (tmp_path / "bound").mkdir()
    results = probe_results(output(spec(lower, tmp_path, "/bin/probe /scratch /bound /etc", mounts=mounts)))
    for name in DENIED:
        assert results[name].startswith("denied"), (name, results[name])
    for name in ALLOWED:
        assert results[name] == "allowed", (name, results[name])
    assert results["clone3"] == "denied ENOSYS"  # so that libc falls back to clone, whose flags are checked
    assert results["newer-syscall"] == "denied ENOSYS"  # as on an older kernel: programs fall back (runc's stub)
    for directory in ("/scratch", "/bound", "/etc"):  # a device node made there cannot be opened (nodev)
        assert results[f"mknod-open:{directory}"] == "denied EACCES", directory


def test_tiocsti_cannot_reach_a_terminal_passed_as_stdio(lower, tmp_path):
    """`pybuild run` passes the operator's terminal: the command gets its own session, so TIOCSTI fails."""
    master, slave = pty.openpty()
    try:
        results = probe_results(output(spec(lower, tmp_path, "/bin/probe"), stdin=slave))
        os.set_blocking(master, False)
        try:
            injected = os.read(master, 1024)
        except BlockingIOError:
            injected = b""
    finally:
        os.close(master)
        os.close(slave)
    assert results["tiocsti-fd0"] == "denied EPERM"
    assert b"#" not in injected


def test_dockers_masked_and_read_only_paths_and_none_when_insecure(lower, tmp_path):
    script = ("wc -c < /proc/interrupts; for m in /proc/sys /sys; do"
              " awk -v m=$m '$5 == m {split($6, o, \",\"); print o[1]; exit}' /proc/self/mountinfo; done")
    assert output(spec(lower, tmp_path, script)).split() == ["0", "ro", "ro"]
    interrupts, sysfs = output(spec(lower, tmp_path, script, insecure=True)).split()  # /proc/sys: part of /proc
    assert int(interrupts) > 0
    assert sysfs == "rw"


# --- why an exec failed ----------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"env": ("PATH=/bin", "=x")}, "environment entry '=x' has an empty name"),
    ({"env": ("PATH=/bin", "A=x\0y")}, "environment entry 'A=x\\x00y' contains a NUL byte"),
    ({"argv": ("/bin/echo", "a\0b")}, "argument 1 of the command contains a NUL byte"),
    ({"argv": ("ec\0ho", "x")}, "argument 0 of the command contains a NUL byte"),
    ({"env": ("PATH=/b\0in",)}, "environment entry 'PATH=/b\\x00in' contains a NUL byte"),
])
def test_an_exec_that_cannot_happen_says_why(lower, tmp_path, changes, message):
    with pytest.raises(SandboxError) as caught:
        run(spec(lower, tmp_path, "true", **changes), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert message in str(caught.value)


# --- through a build ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_build_runs_the_probe_confined(pybuild, busybox_image, probe, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    shutil.copy2(probe, context / "probe")
    (context / "data").mkdir()
    (context / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        "COPY probe /probe\n"
        "RUN --mount=type=tmpfs,target=/t --mount=type=cache,target=/c --mount=type=bind,source=data,target=/b,rw"
        " /probe /t /c /b /tmp && grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"
        " && echo '#!/bin/sh' > /s.sh && echo 'echo script ran' >> /s.sh && chmod +x /s.sh && /s.sh\n")
    proc = pybuild("build", "--no-cache", "--progress", "plain", str(context))
    log = proc.stderr.decode() + proc.stdout.decode()
    results = {}
    for line in log.splitlines():
        words = line.split()
        for index, word in enumerate(words[:-1]):
            if word in DENIED + ALLOWED or word.startswith("mknod-open:"):
                results[word] = " ".join(words[index + 1:])
    for name in DENIED:
        assert results.get(name, "").startswith("denied"), (name, log)
    for name in ALLOWED:
        assert results.get(name) == "allowed", (name, log)
    for directory in ("/t", "/c", "/b", "/tmp"):
        assert results.get(f"mknod-open:{directory}") == "denied EACCES", (directory, log)
    assert "Seccomp:\t2" in log and "NoNewPrivs:\t1" in log
    assert "script ran" in log


# --- the RUN's cgroup --------------------------------------------------------------------------------

def run_cgroups() -> list[Path]:
    """This process's RUN cgroups (cgroup.py names them after the builder's pid)."""
    found = hierarchy()
    return [p for base in found.bases.values() if os.path.isdir(base)
            for p in Path(base).iterdir() if p.name.startswith(f"{os.getpid()}-")]


def test_a_run_lives_in_its_own_cgroup_which_goes_with_it(lower, tmp_path):
    text = output(spec(lower, tmp_path, "cat /proc/self/cgroup"))
    line = next(entry for entry in text.splitlines() if entry.split(":")[1] in ("pids", ""))
    assert f"/{PARENT}/{os.getpid()}-" in line
    assert run_cgroups() == []


def test_pid_1_is_in_the_runs_cgroup_before_the_command_starts(lower, tmp_path):
    """Stage 1 moves PID 1 in while PID 1 mounts the root; PID 1 forks the command only once that is done."""
    text = output(spec(lower, tmp_path, "cat /proc/1/cgroup; echo ---; cat /proc/self/cgroup"))
    for part in text.split("---"):
        line = next(entry for entry in part.strip().splitlines() if entry.split(":")[1] in ("pids", ""))
        assert f"/{PARENT}/{os.getpid()}-" in line


def test_a_cgroup_that_cannot_be_joined_fails_the_run_in_one_line(lower, tmp_path):
    from builder.sandbox import runner

    missing = tmp_path / "no-such-cgroup"
    with pytest.raises(SandboxError, match=f"joining the RUN's cgroup {missing}: No such file or directory"):
        runner._run(spec(lower, tmp_path, "echo never > /never", cgroups=(str(missing),)), subprocess.DEVNULL,
                    subprocess.DEVNULL, subprocess.DEVNULL, None, None)
    assert not (tmp_path / "upper" / "never").exists()


def test_a_fork_bomb_stops_at_the_pids_limit(lower, tmp_path):
    """Each fork holds a process (a sleep), so only the limit can end the loop."""
    script = "while true; do sleep 1000 & done"
    status = run(spec(lower, tmp_path, script, resources=Resources(pids_limit=40)), stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert status.limit == "pids"
    assert status.code != 0
    assert run_cgroups() == []


def test_a_memory_hog_is_killed_at_the_memory_limit(lower, tmp_path):
    script = "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
    out: list[bytes] = []
    status = run(spec(lower, tmp_path, script, resources=Resources(memory=32 << 20)), stdout=out.append,
                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert status.limit == "memory"
    assert b"survived" not in b"".join(out)


def test_no_limit_hit_is_reported_for_an_ordinary_run(lower, tmp_path):
    status = run(spec(lower, tmp_path, "for i in 1 2 3 4 5; do sleep 0 & done; wait",
                      resources=Resources(pids_limit=40, memory=64 << 20)), stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert status == ExitStatus(0)


def test_cpu_and_memory_limits_reach_the_cgroup(lower, tmp_path):
    """Read the RUN's cgroup files while it runs (the RUN itself cannot see cgroupfs), then cancel it."""
    resources = Resources(pids_limit=100, memory=64 << 20, cpu_quota=20000, cpu_period=50000, cpu_shares=512,
                          cpuset_cpus="0")
    cancel = threading.Event()
    result: list[ExitStatus] = []
    thread = threading.Thread(target=lambda: result.append(run(
        spec(lower, tmp_path, "sleep 1000", resources=resources), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cancel=cancel)))
    thread.start()
    try:
        values: dict[str, str] = {}
        wanted = ("pids.max", "memory.limit_in_bytes", "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares",
                  "cpuset.cpus", "pids.max", "memory.max", "cpu.max", "cpu.weight")
        while thread.is_alive() and not values.get("procs"):
            for directory in run_cgroups():
                for name in wanted:
                    if (directory / name).exists():
                        values[name] = (directory / name).read_text().strip()
                if "pids.max" in values and (directory / "cgroup.procs").read_text().strip():
                    values["procs"] = "yes"
    finally:
        cancel.set()
        thread.join()
    assert result == [ExitStatus(137, 9)]
    assert values["pids.max"] == "100"
    if hierarchy().version == 1:
        assert (values["memory.limit_in_bytes"], values["cpu.cfs_quota_us"], values["cpu.cfs_period_us"],
                values["cpu.shares"], values["cpuset.cpus"]) == (str(64 << 20), "20000", "50000", "512", "0")
    else:
        assert (values["memory.max"], values["cpu.max"], values["cpuset.cpus"]) == (str(64 << 20), "20000 50000", "0")
    assert run_cgroups() == []


def test_closing_the_cgroup_kills_what_is_left_in_it():
    group = RunCgroup(Resources())
    sleeper = subprocess.Popen(["sleep", "1000"])
    try:
        for path in group.paths:
            Path(path, "cgroup.procs").write_text(str(sleeper.pid))
        group.close()
        assert sleeper.wait() == -9
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run_cgroups() == []


def test_stale_cgroups_of_a_dead_build_are_removed(tmp_path):
    base = next(iter(hierarchy().bases.values()))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(base, f"{dead.pid}-1-1")
    start = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    live = Path(base, f"{os.getpid()}-{start}-999")
    stale.mkdir()
    live.mkdir()
    try:
        assert remove_stale(base) == [str(stale)]
        assert live.is_dir()
    finally:
        live.rmdir()
        if stale.exists():
            stale.rmdir()


@pytest.mark.slow
def test_a_fork_bomb_in_a_build_fails_it_naming_the_limit_and_its_flag(pybuild, busybox_image, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM pybuild/busybox\nRUN bomb() { bomb | bomb & }; bomb; sleep 5\n")
    proc = pybuild("build", "--no-cache", "--progress", "plain", str(context), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "the RUN reached its process limit of 4096 (--pids-limit)" in err
    assert "--pids-limit N" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_limit_flags_reach_the_run_and_bad_ones_are_refused(pybuild, busybox_image, tmp_path):
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM pybuild/busybox\nRUN x=$(head -c 100000000 /dev/zero | tr '\\0' a)\n")
    proc = pybuild("build", "--no-cache", "--memory", "24m", str(context), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "the RUN ran out of memory (--memory 24m)" in err, err
    for flags, message in ((["--memory", "lots"], "--memory: 'lots' is not a size"),
                           (["--pids-limit", "0"], "a pids limit of 0 lets no process start"),
                           (["--memory-swap", "10m"], "the memory+swap limit needs a memory limit")):
        proc = pybuild("build", *flags, str(context), check=False)
        assert proc.returncode != 0 and message in proc.stderr.decode(), proc.stderr.decode()


@pytest.mark.slow
def test_the_next_build_removes_the_cgroups_a_sigkilled_build_left(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo started && sleep 1000\n")
    cmd = [sys.executable, "-m", "builder", "build", "--root", str(pybuild.root), "--progress", "plain",
           "--no-cache", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen = b""
        while b" started\n" not in seen:  # the RUN's output line, not the step's title that quotes it
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, seen.decode()
            seen += chunk
        bases = [Path(base) for base in hierarchy().bases.values()]
        left = [p for base in bases for p in base.iterdir() if p.name.startswith(f"{proc.pid}-")]
        assert left, "the RUN's cgroup exists while it runs"
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    for path in left:  # the init dies with the builder (PDEATHSIG), the command with its PID namespace
        while (path / "cgroup.procs").exists() and (path / "cgroup.procs").read_text().strip():
            time.sleep(0.05)
    # Nobody removed them (the build was SIGKILLed) unless another pybuild on this machine, which cleans stale
    # cgroups the same way, got there first: either way none may be left after the next build.
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN true\n")
    pybuild("build", "--no-cache", str(tmp_path))
    assert not any(path.exists() for path in left)
