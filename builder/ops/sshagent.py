"""SSH agent forwarding for RUN --mount=type=ssh (buildx's `--ssh`).

`Agents` turns the `--ssh` flags into agent sockets by id: `--ssh ID` forwards $SSH_AUTH_SOCK, `--ssh ID=SOCKET`
that socket, `--ssh ID=KEY[,KEY...]` the private key files, loaded into an `ssh-agent` the build starts for itself
and stops at its end (buildx serves key files from an agent of its own too). Passphrase-protected keys cannot be
loaded without a terminal: those belong in the user's agent.

A RUN never sees the user's socket itself: `AgentProxy` listens on a socket of its own (with the mode, uid and gid
the mount asks for; the user's socket is left as it is) and a thread of the build relays each connection to the
agent, as BuildKit relays them over its session. The proxy is closed, and its socket removed, when the step ends.
"""
from __future__ import annotations

import os
import selectors
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time

from builder.errors import UsageError

SSH_HINT = "--ssh default (forwards $SSH_AUTH_SOCK), --ssh ID=SOCKET or --ssh ID=KEYFILE[,KEYFILE]"
AGENT_START_TIMEOUT = 10.0  # seconds for the build's own ssh-agent to create its socket
RELAY_CHUNK = 64 << 10


class Agents:
    """Agent sockets by id for one build; `close` stops the agents it started. Raises UsageError for bad flags."""

    def __init__(self, specs: list[str]) -> None:
        self.sockets: dict[str, str] = {}
        self._agents: list[subprocess.Popen] = []
        self._dir: str | None = None
        try:
            for spec in specs:
                ident, _, value = spec.partition("=")
                ident = ident.strip()
                if not ident:
                    raise UsageError(f"invalid --ssh {spec!r}: the id is missing", hint=f"use {SSH_HINT}")
                self.sockets[ident] = self._resolve(ident, [p for p in value.split(",") if p] if value else [])
        except BaseException:
            self.close()
            raise

    def _resolve(self, ident: str, paths: list[str]) -> str:
        if not paths:
            forwarded = os.environ.get("SSH_AUTH_SOCK", "")
            if not forwarded:
                raise UsageError(f"--ssh {ident}: SSH_AUTH_SOCK is not set (no agent to forward)",
                                 hint=f"start an agent (eval $(ssh-agent); ssh-add), or use {SSH_HINT}")
            paths = [forwarded]
        kinds = []
        for path in paths:
            try:
                kinds.append(stat.S_IFMT(os.stat(path).st_mode))
            except OSError as exc:
                raise UsageError(f"--ssh {ident}: cannot use {path}: {exc.strerror}", hint=f"use {SSH_HINT}") from None
        if kinds == [stat.S_IFSOCK]:
            return os.path.abspath(paths[0])
        if all(kind == stat.S_IFREG for kind in kinds):
            return self._agent_with_keys(ident, paths)
        raise UsageError(f"--ssh {ident}: give one agent socket or private key files, not {', '.join(paths)}",
                         hint=f"use {SSH_HINT}")

    def _agent_with_keys(self, ident: str, keys: list[str]) -> str:
        agent, add = shutil.which("ssh-agent"), shutil.which("ssh-add")
        if agent is None or add is None:
            raise UsageError(f"--ssh {ident}={','.join(keys)}: key files need ssh-agent and ssh-add (OpenSSH), "
                             "which are not installed", hint="install openssh-client, or forward a running agent "
                                                             "with --ssh default")
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="pybuild-ssh-")
        path = os.path.join(self._dir, f"agent{len(self._agents)}.sock")
        proc = subprocess.Popen([agent, "-D", "-a", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self._agents.append(proc)
        deadline = time.monotonic() + AGENT_START_TIMEOUT
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise UsageError(f"--ssh {ident}: ssh-agent did not start")
            time.sleep(0.01)
        env = {"SSH_AUTH_SOCK": path, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SSH_ASKPASS_REQUIRE": "never"}
        for key in keys:  # no terminal (new session, no stdin): a passphrase cannot be asked for
            done = subprocess.run([add, "-q", key], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  start_new_session=True, timeout=60)
            if done.returncode != 0:
                said = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
                raise UsageError(f"--ssh {ident}: cannot load the key {key}: {said or 'ssh-add failed'}",
                                 hint="a key with a passphrase: add it to your agent (ssh-add) and pass --ssh "
                                      f"{ident} to forward the agent")
        return path

    def close(self) -> None:
        for proc in self._agents:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        self._agents.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class AgentProxy:
    """A socket at ``path`` (``mode``, ``uid``:``gid``) whose connections are relayed to the agent at ``upstream``
    by one thread; `close` stops it and removes the socket."""

    def __init__(self, upstream: str, path: str, *, mode: int, uid: int, gid: int) -> None:
        self.upstream = upstream
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(path)
            os.chmod(path, mode)
            os.chown(path, uid, gid)
            self._listener.listen(16)
        except BaseException:
            self._listener.close()
            raise
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="pybuild-ssh-agent", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj == self._wake_r:
                        return
                    if key.fileobj is self._listener:
                        self._accept(sel, peers)
                    else:
                        assert isinstance(key.fileobj, socket.socket)  # a peer: only sockets are registered
                        self._relay(sel, peers, key.fileobj)
        finally:
            for sock in peers:
                sock.close()
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, peers: dict) -> None:
        client, _ = self._listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.upstream)
        except OSError:  # the agent went away: the client sees its connection closed
            client.close()
            upstream.close()
            return
        peers[client], peers[upstream] = upstream, client
        sel.register(client, selectors.EVENT_READ)
        sel.register(upstream, selectors.EVENT_READ)

    @staticmethod
    def _relay(sel: selectors.BaseSelector, peers: dict, sock: socket.socket) -> None:
        other = peers.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(RELAY_CHUNK)
            if data:
                other.sendall(data)  # agent messages are small: the other end takes them at once
        except OSError:
            data = b""
        if not data:
            for end in (sock, other):
                sel.unregister(end)
                end.close()
                peers.pop(end, None)

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=10)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
