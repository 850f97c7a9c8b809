"""--ssh and RUN --mount=type=ssh's agent side (builder/ops/sshagent.py) with OpenSSH's real tools: key files are
loaded into an agent of the build's own, a proxy socket with the mount's mode and owner relays to it (ssh-add
lists the key through it), and every bad --ssh is one clear error."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess

import pytest

from builder.errors import UsageError
from builder.ops.sshagent import AgentProxy, Agents

pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in ("ssh-agent", "ssh-add", "ssh-keygen")),
                                reason="OpenSSH's agent tools are not installed (scripts/setup.sh installs them)")


def keygen(path, passphrase: str = "") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return str(path)


def listed(agent_socket: str) -> str:
    """What `ssh-add -l` says through ``agent_socket``."""
    done = subprocess.run(["ssh-add", "-l"], env={"SSH_AUTH_SOCK": agent_socket, "PATH": os.environ["PATH"]},
                          capture_output=True, timeout=60)
    return done.stdout.decode()


@pytest.fixture
def key(tmp_path) -> str:
    return keygen(tmp_path / "id_test")


def test_key_files_are_served_through_a_proxy_with_the_mounts_mode_and_owner(tmp_path, key):
    fingerprint = subprocess.run(["ssh-keygen", "-lf", key + ".pub"], capture_output=True,
                                 check=True).stdout.split()[1].decode()
    agents = Agents([f"git={key}"])
    try:
        upstream = agents.sockets["git"]
        owner = (1234, 5678) if os.geteuid() == 0 else (os.getuid(), os.getgid())  # another owner needs root
        proxy = AgentProxy(upstream, str(tmp_path / "agent.sock"), mode=0o660, uid=owner[0], gid=owner[1])
        try:
            st = os.stat(proxy.path)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
            assert (st.st_uid, st.st_gid) == owner
            assert fingerprint in listed(proxy.path)  # relayed both ways
            assert fingerprint in listed(proxy.path)  # and again, on a new connection
        finally:
            proxy.close()
        assert not os.path.exists(proxy.path)
    finally:
        agents.close()
    assert not os.path.exists(upstream)  # the build's own agent is gone with its directory


def test_an_agent_socket_is_forwarded_as_it_is(tmp_path, key, monkeypatch):
    own = Agents([f"k={key}"])
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", own.sockets["k"])
        forwarded = Agents(["default", f"other={own.sockets['k']}"])
        assert forwarded.sockets == {"default": own.sockets["k"], "other": own.sockets["k"]}
        forwarded.close()
    finally:
        own.close()


@pytest.mark.parametrize("spec, message", [
    ("=x", "invalid --ssh '=x': the id is missing"),
    ("a=/nonexistent/agent", "--ssh a: cannot use /nonexistent/agent: No such file or directory"),
    ("default", "--ssh default: SSH_AUTH_SOCK is not set (no agent to forward)"),
])
def test_bad_ssh_flags_are_one_clear_error(spec, message, monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(UsageError) as info:
        Agents([spec])
    assert info.value.message == message and "--ssh" in info.value.hint


def test_a_socket_and_key_files_together_or_a_locked_key_are_refused(tmp_path, key):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s.sock"))
    try:
        with pytest.raises(UsageError, match="give one agent socket or private key files, not"):
            Agents([f"a={tmp_path / 's.sock'},{key}"])
    finally:
        listener.close()
    locked = keygen(tmp_path / "id_locked", passphrase="secret phrase")
    with pytest.raises(UsageError, match=f"--ssh b: cannot load the key {locked}") as info:
        Agents([f"b={locked}"])
    assert "passphrase" in info.value.hint


def test_a_proxy_whose_agent_went_away_closes_the_connection(tmp_path):
    proxy = AgentProxy(str(tmp_path / "gone.sock"), str(tmp_path / "p.sock"), mode=0o600, uid=os.getuid(),
                        gid=os.getgid())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(proxy.path)
            client.settimeout(60)
            assert client.recv(16) == b""  # closed, not left hanging
    finally:
        proxy.close()
