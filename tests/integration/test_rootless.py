"""Rootless mode (issue 22): an unprivileged user builds and runs images, and gets the layers a root build gets.

The users and their pybuild are made by tests/integration/rootless_users.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.integration.conftest import REPO, TESTDATA, mountinfo
from tests.integration.rootless_users import (SYSTEM_PYTHON, _diff_ids, _last_layer, _root_pybuild, ranged,  # noqa: F401
                                              users)

pytestmark = pytest.mark.slow


def test_app_build_cached_rebuild_run_and_oci_export(ranged, tmp_path):
    app = str(TESTDATA / "app")
    first = ranged.pybuild("build", "--progress", "plain", "-f", f"{app}/Dockerfile", "-t", "me/app", app)
    assert "notice: rootless mode" in first.stderr.decode()
    assert first.stderr.decode().count("notice: rootless mode: layers are mounted with kernel overlayfs (userxattr)") == 1
    assert (ranged.home / ".local/share/pybuild/index.db").stat().st_uid == ranged.uid  # the per-user store
    again = ranged.pybuild("build", "--progress", "plain", "-f", f"{app}/Dockerfile", "-t", "me/app", app)
    text = again.stderr.decode()
    assert text.count("CACHED") >= 9 and " DONE " not in text.replace("#done", ""), text
    out = ranged.pybuild("run", "--rm", "me/app").stdout.decode()
    assert "hello from pybuild, world!" in out and "user: app" in out
    layout = ranged.home / "app-oci"
    ranged.pybuild("build", "-f", f"{app}/Dockerfile", "-t", "me/app:v1", "--output", f"type=oci,dest={layout}", app)
    skopeo, umoci = require_tool("skopeo"), require_tool("umoci")
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci:{layout}:v1"], check=True,
                                       capture_output=True).stdout)["config"]
    assert config["User"] == "app"
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:v1", str(bundle)], check=True, capture_output=True)
    assert (bundle / "rootfs/srv/app/conf/server.conf").stat().st_uid == 1000
    assert (bundle / "rootfs/home/app").stat().st_uid == 1000
    by_runc = _runc_runs(bundle, tmp_path)  # runc as referee of the rootless export
    assert "hello from pybuild, world!" in by_runc and "user: app" in by_runc, by_runc

    root_store, root_layout = tmp_path / "root-store", tmp_path / "root-oci"
    ctx = tmp_path / "busybox-ctx"
    shutil.copytree(ranged.home / "busybox-ctx", ctx)
    _root_pybuild(root_store, "build", "-t", "pybuild/busybox", str(ctx))
    _root_pybuild(root_store, "build", "-f", f"{app}/Dockerfile", "-t", "me/app:v1", "--output",
                  f"type=oci,dest={root_layout}", app)
    assert _diff_ids(layout) == _diff_ids(root_layout)  # byte-identical layer tars (SOURCE_DATE_EPOCH set)
    assert not ranged.leftovers()


def _runc_runs(bundle: Path, tmp_path: Path) -> str:
    """`runc run` the umoci-unpacked bundle (as root, state under tmp_path); returns its stdout."""
    runc = require_tool("runc")
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    state, name = tmp_path / "runc-state", f"pybuild-rootless-{os.getpid()}"
    proc = subprocess.run([runc, "--root", str(state), "run", "--bundle", str(bundle), name], capture_output=True,
                          timeout=120)
    subprocess.run([runc, "--root", str(state), "delete", "--force", name], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def test_whiteouts_and_opaque_dirs_match_root_mode(ranged, tmp_path):
    dockerfile = ("FROM pybuild/busybox\n"
                  "RUN rm /bin/ls && rm -r /home/app && rm -r /usr/local/bin && mkdir /usr/local/bin "
                  "&& echo x > /usr/local/bin/new\n")
    ctx = ranged.home / "wh-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    layout = ranged.home / "wh-oci"
    ranged.pybuild("build", "--output", f"type=oci,dest={layout}", str(ctx))
    names = {m.name for m in _last_layer(layout)}
    assert {"bin/.wh.ls", "home/.wh.app", "usr/local/bin/.wh..wh..opq", "usr/local/bin/new"} <= names, names

    root_store, root_layout, bctx = tmp_path / "root-store", tmp_path / "root-oci", tmp_path / "bb"
    shutil.copytree(ranged.home / "busybox-ctx", bctx)
    _root_pybuild(root_store, "build", "-t", "pybuild/busybox", str(bctx))
    _root_pybuild(root_store, "build", "--output", f"type=oci,dest={root_layout}", str(ctx))
    assert _diff_ids(layout) == _diff_ids(root_layout)


def test_run_adds_a_user_and_chowns_files_to_it(ranged):
    ctx = ranged.home / "chown-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        "RUN echo 'bob:x:1234:1235::/home/bob:/bin/sh' >> /etc/passwd && echo 'bob:x:1235:' >> /etc/group "
        "&& mkdir -p /home/bob && echo hi > /home/bob/f && chown -R bob:bob /home/bob\n")
    layout = ranged.home / "chown-oci"
    ranged.pybuild("build", "-t", "me/bob", "--output", f"type=oci,dest={layout}", str(ctx))
    owners = {m.name: (m.uid, m.gid) for m in _last_layer(layout)}
    assert owners["home/bob"] == owners["home/bob/f"] == (1234, 1235), owners
    shown = ranged.pybuild("run", "--rm", "me/bob", "stat", "-c", "%u:%g %U", "/home/bob/f").stdout.decode()
    assert shown.strip() == "1234:1235 bob"


def test_failing_build_leaves_no_process_or_mount(ranged):
    ctx = ranged.home / "fail-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN sleep 30 & echo bye; exit 3\n")
    before = mountinfo(ranged.home)
    proc = ranged.pybuild("build", str(ctx), check=False)
    assert proc.returncode == 1 and "exit code: 3" in proc.stderr.decode() + proc.stdout.decode(), proc.stderr
    assert mountinfo(ranged.home) == before
    assert not ranged.leftovers()


def test_without_subordinate_ranges_one_warning_and_a_working_build(users):
    user = users[1]
    ctx = user.home / "single"
    ctx.mkdir()
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY busybox /bin/busybox\n"
                                    "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo ok > /f\"]\n")
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(ctx)], check=True)
    proc = user.pybuild("build", "--progress", "plain", "-t", "me/single", str(ctx))
    err = proc.stderr.decode()
    assert err.count("warning: rootless mode with a single id") == 1, err
    assert "usermod --add-subuids" in err
    for _ in range(2):  # the second build completes the fast path's memo, the third replays it
        again = user.pybuild("build", "--progress", "plain", "-t", "me/single", str(ctx)).stderr.decode()
    assert again.count("CACHED") == 2 and "warning: rootless mode" not in again, again  # a replay enters nothing
    out = user.pybuild("run", "--rm", "me/single", "/bin/busybox", "cat", "/f").stdout.decode()
    assert out == "ok\n"
    assert not user.leftovers()


def test_push_to_the_test_registry(ranged, tmp_path):
    from tests.integration.registry import start_registry

    registry = start_registry(tmp_path / "registry")
    try:
        name = f"{registry.host}/me/rootless:1"
        ranged.pybuild("build", "-t", name, "--push", "-f", f"{TESTDATA}/app/Dockerfile", str(TESTDATA / "app"))
        found = json.loads(subprocess.run([require_tool("skopeo"), "inspect", "--tls-verify=false",
                                           f"docker://{name}"], check=True, capture_output=True).stdout)
        assert len(found["Layers"]) >= 9
    finally:
        registry.stop()


def test_ctrl_c_during_run_leaves_no_process_or_mount(ranged):
    ctx = ranged.home / "sleep-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo started-sleeping && sleep 600\n")
    before = mountinfo(ranged.home)
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(ranged.home),
               "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
    proc = subprocess.Popen(["setpriv", f"--reuid={ranged.uid}", f"--regid={ranged.gid}", "--init-groups", "env",
                             "-i", *(f"{k}={v}" for k, v in environ.items()), SYSTEM_PYTHON, "-m", "builder",
                             "build", "--progress", "plain", "--no-cache", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ranged.home, start_new_session=True)
    try:
        seen = b""
        line = b""
        while not re.match(rb"#\d+ \d+\.\d+ started-sleeping", line):  # the RUN's own output, not its title
            line = proc.stdout.readline()  # (a ^C during a RUN's set-up can hang a build, root mode too)
            assert line, seen.decode()
            seen += line
        os.killpg(proc.pid, 2)  # what a terminal's ^C does: SIGINT to the whole foreground group
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (seen + rest).decode()
    assert not ranged.leftovers()
    assert mountinfo(ranged.home) == before


NO_USERNS = """
import ctypes, os, sys
uid, gid, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:
        os._exit(99)
    os.write(ready_w, b"1")
    if os.read(go_r, 1) != b"1":  # the parent failed to write the maps
        os._exit(98)
    with open("/proc/sys/user/max_user_namespaces", "w") as f:  # this namespace's own limit, not the host's
        f.write("0")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.execv(argv[0], argv)  # an absolute path: after setuid the runner's own library may be unreadable
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 65536\\n")
os.write(go_w, b"1")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_without_user_namespaces_one_clear_error(users):
    """In a namespace whose user.max_user_namespaces is 0 (a container without user namespaces, in effect)."""
    user = users[1]
    if user.uid >= 65536:
        pytest.skip("the test user's uid is outside the nested namespace's map")
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(user.home),
               "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
    proc = subprocess.run([sys.executable, "-c", NO_USERNS, str(user.uid), str(user.gid), "/usr/bin/env", "-i",
                           *(f"{k}={v}" for k, v in environ.items()), SYSTEM_PYTHON, "-m", "builder", "images"],
                          capture_output=True, text=True, cwd=user.home, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: rootless mode: cannot create a user namespace (unshare: ENOSPC): user "
                                  "namespaces are disabled: set user.max_user_namespaces"), proc.stderr
    assert "hint: or run pybuild as root" in proc.stderr and "Traceback" not in proc.stderr


def test_a_store_is_never_shared_by_root_and_a_user(ranged, tmp_path):
    own = ranged.home / ".local/share/pybuild"
    as_root = subprocess.run([sys.executable, "-m", "builder", "images", "--root", str(own)], capture_output=True,
                             text=True, cwd=REPO)
    assert as_root.returncode == 1 and "belongs to uid" in as_root.stderr, as_root.stderr
    shared = ranged.home / "roots-store"  # a store root made, readable by all, in a directory the user can reach
    _root_pybuild(shared, "images")
    os.chmod(shared, 0o755)
    proc = ranged.pybuild("images", "--root", str(shared), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "belongs to another user (root's store" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()


IN_USERNS = """
import ctypes, os, sys
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000 | 0x00020000) != 0:
        os._exit(99)
    os.write(ready_w, b"1")
    if os.read(go_r, 1) != b"1":  # the parent failed to write the maps
        os._exit(98)
    os.execv(sys.argv[1], sys.argv[1:])
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 65536\\n")
os.write(go_w, b"1")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
SLIRP_PROBE = """
import ctypes, os, sys
from builder.slirp import SlirpNetwork
net = SlirpNetwork()
try:
    pid = os.fork()
    if pid == 0:
        if ctypes.CDLL(None, use_errno=True).setns(net.fd, 0x40000000) != 0:
            os._exit(3)
        os.execv(sys.argv[1], [sys.argv[1], "-4", "-o", "addr", "show", "tap0"])
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
finally:
    net.close()
"""


def test_slirp_network_gives_its_namespace_tap0_and_ends_with_close():
    """builder/slirp.py in a user namespace of the test's own (ids 0-65535 = the host's, so /dev/net/tun opens
    whatever its mode): the namespace gets tap0 with slirp4netns' address; close() leaves no process."""
    if os.geteuid() != 0:
        pytest.skip("needs root to map its own ids into the namespace")
    require_tool("slirp4netns")
    ip = require_tool("ip")
    before = {p.name for p in Path("/proc").iterdir() if p.name.isdigit()}
    proc = subprocess.run([sys.executable, "-c", IN_USERNS, sys.executable, "-c", SLIRP_PROBE, ip],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tap0" in proc.stdout and "inet 10.0.2.100/24" in proc.stdout, proc.stdout
    after = {p.name for p in Path("/proc").iterdir() if p.name.isdigit()}
    ours = [pid for pid in after - before if "slirp4netns" in _cmdline(pid)]
    assert ours == []


def _cmdline(pid: str) -> str:
    with contextlib.suppress(OSError):
        return (Path("/proc") / pid / "cmdline").read_bytes().decode(errors="replace")
    return ""


def test_rootless_default_network_is_slirp_or_said_isolated(ranged):
    """With /dev/net/tun open to all (Debian's default) RUN gets tap0; where it is root's alone (this machine's
    0600), slirp4netns cannot start and the build says so once and runs RUN isolated."""
    require_tool("slirp4netns")
    ctx = ranged.home / "net-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN ip -o link\n")
    proc = ranged.pybuild("build", "--progress", "plain", "--no-cache", str(ctx))
    err = proc.stderr.decode()
    if os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
        assert "tap0" in err and "slirp4netns" in err, err
    else:
        assert err.count('slirp4netns failed: open("/dev/net/tun"): Permission denied') == 1, err
        assert "RUN's default network is isolated" in err and "tap0" not in err, err
    assert not ranged.leftovers()
