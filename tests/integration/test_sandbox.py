"""The build container, for real: namespaces, overlay root, mounts, exit statuses, cancellation.

Each test runs busybox commands in a container over a tiny busybox rootfs (the lowerdir, shared and
never written) with its own upperdir. After every test the host's mount table must be unchanged
and no process of the container may be left (the autouse `no_leaks` fixture asserts both).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from builder.ops.helpers import fork_server as fork_server_for_a_build
from builder.sandbox.forkserver import ForkServer
from builder.sandbox.runner import ExitStatus, SandboxError, run
from builder.sandbox.spec import ContainerSpec, Mount

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
builder:x:1000:1000:Builder:/home/builder:/bin/sh
"""
GROUP = """root:x:0:
daemon:x:1:
wheel:x:10:root,builder
staff:x:50:builder
builder:x:1000:
"""


def make_busybox_root(dest: Path) -> Path:
    """bin/busybox with relative applet links (an absolute link would point at the host), etc/passwd."""
    if not Path(BUSYBOX).exists():
        pytest.skip("busybox is not installed (apt-get install busybox-static)")
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = os.popen(f"{BUSYBOX} --list").read().split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", dest / "bin" / applet)
    (dest / "etc").mkdir()
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    return dest


def tree(path: Path) -> dict[str, tuple[int, int, int]]:
    """Relative path → (mode, size, mtime_ns) of everything below `path`, symlinks not followed."""
    result = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = Path(root) / name
            info = full.lstat()
            result[str(full.relative_to(path))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return result


@pytest.fixture(scope="module")
def lower(tmp_path_factory) -> Path:
    return make_busybox_root(tmp_path_factory.mktemp("busybox-lower"))


@pytest.fixture(scope="module")
def lower_snapshot(lower):
    return tree(lower)


class Box:
    """A container factory bound to one upperdir; collects output through callbacks. `launcher` starts the init:
    None execs a fresh interpreter per container, a ForkServer forks one (what a build uses)."""

    def __init__(self, lower: Path, tmp: Path, marker: str, launcher: ForkServer | None = None) -> None:
        self.launcher = launcher
        self.lowers = (str(lower),)
        self.upper = tmp / "upper"
        self.work = tmp / "work"
        self.upper.mkdir()
        self.work.mkdir()
        self.marker = marker

    def spec(self, script: str, **changes) -> ContainerSpec:
        env = ("PATH=/bin", f"PYBUILD_TEST_MARK={self.marker}") + tuple(changes.pop("env", ()))
        fields = dict(argv=("/bin/sh", "-c", script), lowerdirs=self.lowers, upperdir=str(self.upper),
                      workdir=str(self.work), env=env, hostname="sandboxtest")
        fields.update(changes)
        return ContainerSpec(**fields)

    def run(self, script: str, **changes) -> tuple[ExitStatus, str, str]:
        out: list[bytes] = []
        err: list[bytes] = []
        status = run(self.spec(script, **changes), stdout=out.append, stderr=err.append,
                     stdin=subprocess.DEVNULL, launcher=self.launcher)
        return status, b"".join(out).decode(), b"".join(err).decode()

    def output(self, script: str, **changes) -> str:
        status, out, err = self.run(script, **changes)
        assert status == ExitStatus(0), f"{script!r} → {status}; stderr: {err}"
        return out


def host_mounts() -> set[tuple[str, str, str]]:
    """(mount point, fstype, source) of the host's mount namespace."""
    entries = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        entries.add((fields[4], fields[dash + 1], fields[dash + 2]))
    return entries


def leftovers(marker: str) -> list[str]:
    """Processes of this test's containers still alive: the init (by its arguments) or the marker env."""
    found = []
    me = str(os.getpid()).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        args = cmdline.split(b"\0")
        if _is_init(entry, args) and me in args:
            found.append(f"{entry}: {cmdline!r}")
        elif marker.encode() in environ:
            found.append(f"{entry}: {cmdline!r}")
    return found


@pytest.fixture(autouse=True)
def no_leaks(tmp_path, lower, lower_snapshot):
    """Around every test: the host mount table touching the test's paths is unchanged, no process is
    left, and the shared lowerdir is untouched."""
    marker = uuid.uuid4().hex
    before = host_mounts()
    yield marker
    deadline = time.monotonic() + 60  # a guard against a hang: clean-up takes seconds on a loaded machine
    while leftovers(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(marker) == []
    changed = before ^ host_mounts()
    # Only what this test could have touched: other work on the machine may mount elsewhere meanwhile.
    exact = {"/", "/tmp", "/mnt", "/run", "/var/tmp", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"}
    assert [m for m in changed if m[0] in exact or m[0].startswith((str(tmp_path), str(lower)))] == []
    assert tree(lower) == lower_snapshot


@pytest.fixture(scope="module")
def fork_server():
    server = fork_server_for_a_build()
    yield server
    server.close()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if _parent_pid(int(entry)) == pid:
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture(params=[pytest.param("exec", marks=pytest.mark.slow), "fork"])
def box(request, lower, tmp_path, no_leaks) -> Box:
    """Every test taking `box` runs twice: the init exec'd afresh, and forked by a build's fork server (what builds
    use; the exec'd runs, for `pybuild run` and direct callers, are in the slow set to keep the fast set short)."""
    if request.param == "exec":
        yield Box(lower, tmp_path, no_leaks)
        return
    server = request.getfixturevalue("fork_server")
    yield Box(lower, tmp_path, no_leaks, server)
    deadline = time.monotonic() + 60  # a guard against a hang: clean-up takes seconds on a loaded machine
    while children_of(server.parent_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children_of(server.parent_pid) == []


# --- isolation -------------------------------------------------------------------------------------

def test_hostname_is_the_specs(box):
    assert box.output("hostname") == "sandboxtest\n"
    assert box.output("cat /etc/hostname") == "sandboxtest\n"


def test_pid_1_is_the_sandbox_init_not_the_hosts(box):
    cmdline = box.output("cat /proc/1/cmdline").split("\0")
    # a forked init keeps the fork server's command line; its name says what it is
    assert ("builder.sandbox.init" if box.launcher is None else "builder.ops.helpers") in cmdline
    if box.launcher is not None:
        assert box.output("cat /proc/1/comm") == "pybuild-init\n"
    assert Path("/proc/1/cmdline").read_bytes().split(b"\0")[0].decode() not in cmdline
    assert box.output("echo $$") != f"{os.getpid()}\n"


def test_network_none_has_only_loopback_and_it_is_up(box):
    links = [line for line in box.output("ip -o link").splitlines() if line.strip()]
    assert len(links) == 1
    assert ": lo:" in links[0] and "UP" in links[0].split("<")[1].split(">")[0].split(",")
    assert box.output("ping -c 1 -W 1 127.0.0.1 >/dev/null && echo ok") == "ok\n"


def test_network_host_sees_the_hosts_interfaces(box):
    names = {line.split(":")[1].strip().split("@")[0]
             for line in box.output("ip -o link", network="host").splitlines() if line.strip()}
    # The session runs in a network namespace of its own (tests/conftest.py), where /sys/class/net, mounted by the
    # host, does not look: ask netlink instead.
    assert names == {name for _, name in socket.if_nameindex()}


def test_root_is_the_image_not_the_host(box):
    assert set(box.output("ls /").split()) == {"bin", "dev", "etc", "proc", "sys"}
    assert box.output("test -e /work || test -e /usr || echo isolated") == "isolated\n"


def test_ipc_and_mount_namespaces_are_new(box):
    for ns in ("mnt", "ipc", "uts", "pid", "net"):
        inside = box.output(f"readlink /proc/self/ns/{ns}").strip()
        assert inside != os.readlink(f"/proc/self/ns/{ns}"), ns


def test_proc_masks_and_read_only_paths(box):
    assert box.output("cat /proc/kcore | wc -c").strip() == "0"
    status, _, _ = box.run("echo 1 > /proc/sys/kernel/domainname")
    assert status.code != 0
    status, _, _ = box.run("touch /sys/x")
    assert status.code != 0


def test_dev_has_the_standard_nodes(box):
    listing = set(box.output("ls /dev").split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "fd", "stdin",
            "stdout", "stderr", "ptmx"} <= listing
    assert box.output("echo gone > /dev/null; head -c 4 /dev/zero | wc -c").strip() == "4"
    assert box.output("readlink /dev/ptmx") == "pts/ptmx\n"
    assert box.output("echo shm > /dev/shm/x && cat /dev/shm/x") == "shm\n"


# --- the layer -------------------------------------------------------------------------------------

def test_writes_land_in_the_upperdir_only(box):
    box.output("echo data > /new-file; mkdir -p /new/dir; rm /bin/vi")
    assert (box.upper / "new-file").read_text() == "data\n"
    assert (box.upper / "new" / "dir").is_dir()
    whiteout = (box.upper / "bin" / "vi").lstat()
    assert os.major(whiteout.st_rdev) == 0 and os.minor(whiteout.st_rdev) == 0  # overlay whiteout


def test_the_root_overlay_is_volatile_and_its_upper_can_be_used_again(box):
    """volatile: no sync of the upper at unmount (the store syncs at commit); the kernel marks the work dir
    so it refuses a second mount, which the sandbox clears for a work dir its own container left."""
    root = [line for line in box.output("cat /proc/self/mountinfo").splitlines() if line.split()[4] == "/"]
    assert root and "volatile" in root[0].split(" - ")[1]
    box.output("echo first > /again")
    assert box.output("cat /again; echo second >> /again; cat /again") == "first\nfirst\nsecond\n"
    assert (box.upper / "again").read_text() == "first\nsecond\n"


def test_true_leaves_an_empty_layer(box):
    """The image has no /proc, /dev, /sys, /etc/hosts: their mount stubs must not be committed."""
    box.output("true")
    assert tree(box.upper) == {}


def test_generated_etc_files_are_not_in_the_layer(box):
    out = box.output("cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo 1.2.3.4 extra >> /etc/hosts")
    hosts, resolv = out.split("---\n")
    assert "127.0.0.1\tlocalhost" in hosts and "sandboxtest" in hosts
    assert "nameserver" not in resolv
    assert not (box.upper / "etc" / "hosts").exists()
    assert not (box.upper / "etc" / "resolv.conf").exists()
    assert not (box.upper / "etc" / "hostname").exists()


def test_generated_files_hide_the_images_without_touching_them(tmp_path, no_leaks):
    image = make_busybox_root(tmp_path / "image")
    (image / "etc" / "hosts").write_text("10.0.0.1 image-host\n")
    box = Box(image, tmp_path, no_leaks)
    etc_before = tree(image / "etc")
    out = box.output("cat /etc/hosts", extra_hosts=(("registry", "10.1.2.3"),))
    assert "image-host" not in out and "10.1.2.3\tregistry" in out
    assert tree(box.upper) == {}
    assert tree(image / "etc") == etc_before


def test_host_network_copies_the_hosts_resolv_conf(box):
    expected = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else None
    if expected is None:
        pytest.skip("the host has no /etc/resolv.conf")
    assert box.output("cat /etc/resolv.conf", network="host") == expected


def test_missing_working_directory_is_created_and_kept(box):
    assert box.output("pwd", cwd="/app/src") == "/app/src\n"
    assert (box.upper / "app" / "src").is_dir()


def test_commands_changes_to_etc_survive_stub_cleanup(box):
    box.output("echo x > /etc/motd")
    assert (box.upper / "etc" / "motd").read_text() == "x\n"
    assert not (box.upper / "etc" / "hosts").exists()


def test_read_only_root_rejects_writes(box):
    status, _, err = box.run("touch /x", upperdir=None, workdir=None)
    assert status.code != 0 and "Read-only" in err


# --- exit statuses and processes -------------------------------------------------------------------

@pytest.mark.parametrize("script, expected", [
    ("exit 0", ExitStatus(0)),
    ("exit 3", ExitStatus(3)),
    ("exit 255", ExitStatus(255)),
    ("kill -9 $$", ExitStatus(137, 9)),
    ("kill -TERM $$", ExitStatus(143, 15)),
])
def test_exit_codes_and_signals_pass_through(box, script, expected):
    assert box.run(script)[0] == expected


def test_orphans_are_reaped_by_pid_1(box):
    # The inner shell exits at once; its `sleep` is re-parented to PID 1 and must not stay a zombie.
    out = box.output("sh -c 'sleep 0.1 &'; sleep 0.5; cat /proc/[0-9]*/stat")
    states = [line.split(") ")[1].split()[0] for line in out.splitlines() if ") " in line]
    assert states and "Z" not in states


def test_background_processes_die_with_the_command(box):
    status, out, _ = box.run("sleep 100 & echo started")
    assert status == ExitStatus(0) and out == "started\n"  # and no_leaks finds no `sleep 100`


def test_stdout_and_stderr_are_separate(box):
    status, out, err = box.run("echo to-out; echo to-err >&2")
    assert (status, out, err) == (ExitStatus(0), "to-out\n", "to-err\n")


def test_stdin_and_file_descriptor_outputs(box, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("piped input\n")
    target = tmp_path / "out.txt"
    with open(source, "rb") as stdin, open(target, "wb") as stdout:
        status = run(box.spec("cat"), stdin=stdin.fileno(), stdout=stdout.fileno(), stderr=stdout.fileno(), launcher=box.launcher)
    assert status == ExitStatus(0)
    assert target.read_text() == "piped input\n"


def test_environment_and_home(box):
    out = box.output('echo "$GREETING|$HOME"', env=("GREETING=hi there",))
    assert out == "hi there|/root\n"


def test_cancel_stops_the_container_before_its_command_ends(box):
    cancel = threading.Event()
    result: list[ExitStatus] = []
    thread = threading.Thread(target=lambda: result.append(run(box.spec("sleep 300"), cancel=cancel, launcher=box.launcher)))
    thread.start()
    time.sleep(0.5)
    cancel.set()
    thread.join(60)  # a guard, not a timing: the command would sleep 300 s
    assert not thread.is_alive()
    assert result == [ExitStatus(137, 9)]


def test_parallel_runs_from_threads(lower, tmp_path, no_leaks):
    boxes = []
    for index in range(4):
        (tmp_path / str(index)).mkdir()
        boxes.append(Box(lower, tmp_path / str(index), no_leaks))
    results: dict[int, str] = {}

    def work(index: int) -> None:
        results[index] = boxes[index].output(f"echo {index} > /mine; sleep 0.2; cat /mine; hostname",
                                             hostname=f"box{index}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: f"{i}\nbox{i}\n" for i in range(4)}


# --- setup failures --------------------------------------------------------------------------------

def test_a_fork_server_that_died_is_a_sandbox_error(lower, tmp_path, no_leaks):
    server = fork_server_for_a_build()
    try:
        os.kill(server.parent_pid, signal.SIGKILL)
        with pytest.raises(SandboxError, match="^starting the sandbox init: the step helpers' fork server has exited$"):
            Box(lower, tmp_path, no_leaks, server).run("true")
    finally:
        server.close()


def test_unknown_executable_is_a_sandbox_error(box):
    spec = box.spec("")
    with pytest.raises(SandboxError, match=r'^exec: "no-such-tool": executable file not found in \$PATH$'):
        run(ContainerSpec(**{**_fields(spec), "argv": ("no-such-tool",)}), launcher=box.launcher)


def test_path_lookup_uses_the_containers_path(box, tmp_path):
    spec = box.spec("")
    fields = _fields(spec)
    fields["env"] = ("PATH=/opt/tools:/bin",)
    box.output("mkdir -p /opt/tools; printf '#!/bin/sh\\necho from-opt\\n' > /opt/tools/hello;"
               " chmod +x /opt/tools/hello")
    out: list[bytes] = []
    assert run(ContainerSpec(**{**fields, "argv": ("hello",)}), stdout=out.append, launcher=box.launcher) == ExitStatus(0)
    assert b"".join(out) == b"from-opt\n"
    with pytest.raises(SandboxError, match="executable file not found"):
        run(ContainerSpec(**{**fields, "env": ("PATH=/nowhere",), "argv": ("sh", "-c", "true")}), launcher=box.launcher)


def test_missing_absolute_command(box):
    with pytest.raises(SandboxError, match=r'^exec: "/bin/nope": stat /bin/nope: no such file or directory$'):
        run(ContainerSpec(**{**_fields(box.spec("")), "argv": ("/bin/nope",)}), launcher=box.launcher)


def test_missing_layer_directory(box, tmp_path):
    spec = ContainerSpec(**{**_fields(box.spec("true")), "lowerdirs": (str(tmp_path / "absent"),)})
    with pytest.raises(SandboxError, match="opening layer directory .*absent: No such file or directory"):
        run(spec)


def _fields(spec: ContainerSpec) -> dict:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}


# --- users -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("user, expected", [
    ("", "0 0 0 10 /root"),
    ("builder", "1000 1000 1000 10 50 /home/builder"),
    ("1000", "1000 1000 1000 10 50 /home/builder"),
    ("builder:staff", "1000 50 50 /home/builder"),
    ("1000:50", "1000 50 50 /home/builder"),
    ("4242", "4242 0 0 /"),
    ("4242:4343", "4242 4343 4343 /"),
])
def test_user_resolution(box, user, expected):
    assert box.output('echo $(id -u) $(id -g) $(id -G) $HOME', user=user).strip() == expected


def test_user_cannot_write_roots_files(box):
    status, _, err = box.run("echo x > /etc/passwd", user="builder")
    assert status.code != 0 and "Permission denied" in err


@pytest.mark.parametrize("user, message", [
    ("nosuch", "unable to find user nosuch: no matching entries in passwd file"),
    ("builder:nogroup", "unable to find group nogroup: no matching entries in group file"),
])
def test_unknown_user_is_a_sandbox_error(box, user, message):
    with pytest.raises(SandboxError) as caught:
        box.run("true", user=user)
    assert str(caught.value) == message
    assert tree(box.upper) == {}  # mount stubs are gone even though the command never ran


# --- extra mounts ----------------------------------------------------------------------------------

def test_bind_mounts_read_only_and_read_write(box, tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "given").write_text("from host\n")
    mounts = (Mount("bind", str(ro), "/mnt/ro", readonly=True), Mount("bind", str(rw), "/mnt/rw"))
    status, out, err = box.run("cat /mnt/ro/given; echo x > /mnt/ro/new; echo $?; echo y > /mnt/rw/new",
                               mounts=mounts)
    assert status == ExitStatus(0), err
    assert out.splitlines() == ["from host", "1"]
    assert not (ro / "new").exists() and (rw / "new").read_text() == "y\n"
    assert tree(box.upper) == {}  # the mount points were stubs


def test_bind_mount_of_a_file_and_a_tmpfs(box, tmp_path):
    config = tmp_path / "config.txt"
    config.write_text("cfg\n")
    mounts = (Mount("bind", str(config), "/etc/app.conf", readonly=True),
              Mount("tmpfs", "tmpfs", "/scratch", options=("size=1m", "mode=1777")))
    out = box.output("cat /etc/app.conf; echo t > /scratch/t; cat /scratch/t; stat -c %a /scratch",
                     mounts=mounts)
    assert out.splitlines() == ["cfg", "t", "1777"]
    assert tree(box.upper) == {}


def test_bad_mount_is_a_sandbox_error_naming_the_container_path(box, tmp_path):
    (tmp_path / "dir").mkdir()
    mounts = (Mount("bind", str(tmp_path / "dir"), "/etc/passwd"),)  # a directory onto a file
    with pytest.raises(SandboxError, match=r"^mounting .*/dir on /etc/passwd: Not a directory$"):
        box.run("true", mounts=mounts)


# --- signals and the builder's death ---------------------------------------------------------------

def _init_pids() -> list[int]:
    me = str(os.getpid()).encode()
    pids = []
    for entry in os.listdir("/proc"):
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if _is_init(entry, args) and me in args:
            pids.append(int(entry))
    return pids


def _is_init(pid: str, args: list[bytes]) -> bool:
    """An exec'd init names its module; a forked one has the fork server's command line and its own comm."""
    if b"builder.sandbox.init" in args:
        return True
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "pybuild-init"
    except OSError:
        return False


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])


def test_sigterm_to_the_init_reaches_the_command(box):
    result: list[tuple[ExitStatus, str, str]] = []
    script = "trap 'echo got TERM; exit 7' TERM; echo ready; sleep 30 & wait"
    thread = threading.Thread(target=lambda: result.append(box.run(script)))
    thread.start()
    deadline = time.monotonic() + 60  # a guard against a hang
    while len(_init_pids()) < 2 and time.monotonic() < deadline:  # stage 1 and PID 1
        time.sleep(0.05)
    time.sleep(0.3)  # let the shell install its trap
    parent = os.getpid() if box.launcher is None else box.launcher.parent_pid
    stage1 = next(pid for pid in _init_pids() if _parent_pid(pid) == parent)
    os.kill(stage1, signal.SIGTERM)
    thread.join(10)
    assert result and result[0] == (ExitStatus(7), "ready\ngot TERM\n", "")


BUILDER_SCRIPT = """
import sys
from builder.sandbox.runner import run
from builder.sandbox.spec import ContainerSpec
spec = ContainerSpec.from_json(sys.argv[1])
def out(chunk):
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
run(spec, stdout=out)
"""


def test_sigkill_of_the_builder_takes_the_container_down(box):
    spec = box.spec("echo ready; sleep 100 & sleep 100")
    builder = subprocess.Popen([sys.executable, "-c", BUILDER_SCRIPT, spec.to_json()], stdout=subprocess.PIPE)
    try:
        assert builder.stdout.readline() == b"ready\n"
        assert leftovers(box.marker)  # the container is really running
    finally:
        builder.kill()
        builder.wait()
        builder.stdout.close()
    deadline = time.monotonic() + 60  # a guard against a hang: clean-up takes seconds on a loaded machine
    while leftovers(box.marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(box.marker) == []  # and no_leaks checks the host's mount table


# --- privileges ------------------------------------------------------------------------------------

def _caps(box: Box, user: str) -> dict[str, str]:
    lines = box.output("grep ^Cap /proc/self/status", user=user).splitlines()
    return {key.rstrip(":"): value for key, value in (line.split() for line in lines)}


def test_root_gets_dockers_default_capabilities_only(box):
    assert _caps(box, "") == {"CapInh": "0000000000000000", "CapPrm": "00000000a80425fb",
                              "CapEff": "00000000a80425fb", "CapBnd": "00000000a80425fb",
                              "CapAmb": "0000000000000000"}
    assert _caps(box, "builder")["CapEff"] == "0000000000000000"


def test_no_mounting_and_no_usable_device_nodes(box):
    status, _, err = box.run("mount -t tmpfs none /bin")
    assert status.code != 0
    status, _, err = box.run("mknod /disk b 7 0 && head -c 1 /disk")
    assert status.code != 0 and "Permission denied" in err
    status, _, err = box.run("mknod /dev/disk b 7 0 && head -c 1 /dev/disk")
    assert status.code != 0 and "Permission denied" in err


def test_a_failing_output_callback_does_not_hang_the_container(box):
    def explode(chunk: bytes) -> None:
        raise RuntimeError("sink broke")

    with pytest.raises(RuntimeError, match="sink broke"):  # returning at all is the point: no hang
        run(box.spec("head -c 1000000 /dev/zero; echo done"), stdout=explode, launcher=box.launcher)


# --- layer stacks ----------------------------------------------------------------------------------

def test_scratch_image_with_files_only_in_the_upperdir(tmp_path, no_leaks, lower):
    box = Box(lower, tmp_path, no_leaks)
    shutil.rmtree(box.upper)
    make_busybox_root(box.upper)  # as if COPY had put busybox into a FROM scratch stage
    out = box.output("ls /bin/busybox /etc/passwd; echo made > /new", lowerdirs=())
    assert out.split() == ["/bin/busybox", "/etc/passwd"]
    assert (box.upper / "new").read_text() == "made\n"
    assert not (box.upper / "proc").exists() and not (box.upper / "etc" / "hosts").exists()


def test_lowerdirs_stack_top_most_first_and_read_only(box, tmp_path):
    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    (top / "etc" / "passwd").write_text("root:x:0:0:top layer:/top:/bin/sh\n")
    (top / "extra").write_text("from the top layer\n")
    lowers = (str(top), box.lowers[0])
    out = box.output("cat /extra; echo $HOME; ls /bin/sh", lowerdirs=lowers, upperdir=None, workdir=None)
    assert out.splitlines() == ["from the top layer", "/top", "/bin/sh"]
    status, _, err = box.run("echo x > /extra", lowerdirs=lowers, upperdir=None, workdir=None)
    assert status.code != 0 and "Read-only file system" in err
    assert (top / "extra").read_text() == "from the top layer\n"
