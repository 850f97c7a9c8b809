"""RUN --mount: key its inputs and realise it for a run (the flag is parsed at plan time: builder/plan/mountflags.py).

- type=cache: a persistent directory in the store (`<root>/cachemounts/<hash of id>`), never in a layer or key;
  sharing=locked serialises users across builds (fcntl), private gives a busy mount's second user a fresh dir.
  With from=<stage|image> (and source=<dir in it>) the directory starts as a copy of that directory and is
  a cache of its own per (id, from root, source), as BuildKit keys a cache mount by id and base ref.
- type=bind: a context path (read-only unless rw; rw writes go to a throw-away copy) — its content checksum
  enters the key so a change re-runs the step.
- type=tmpfs: an empty tmpfs.
- type=secret: `--secret id=X,src=FILE|env=VAR`, bind-mounted read-only at /run/secrets/X (or target); only the
  id and target enter the key, history never shows the value, and the sandbox removes mount stubs from the layer.
- type=ssh: the agent `--ssh X` names (id default "default"), served at /run/buildkit/ssh_agent.N (the N-th ssh
  mount of the RUN, or target) by a proxy socket (see sshagent.py); the first one is $SSH_AUTH_SOCK unless the
  RUN's environment sets it. Only id and target enter the key; a missing agent is an error when required,
  else the mount is left out (as BuildKit).
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from builder.context.checksum import checksum_sources
from builder.context.paths import clean, scoped_join
from cache.cachemounts import hold
from builder.errors import PybuildError
from builder.plan.steps import ExecOp, RunMount, Step

if TYPE_CHECKING:
    from collections.abc import Callable
    from cache import Snapshot, Store


@dataclass
class MountSources:
    store: Store
    context_dir: str | None
    secrets: dict[str, str]
    snapshots: dict[int, Snapshot | None] = field(default_factory=dict)
    ssh: dict[str, str] = field(default_factory=dict)  # --ssh id → agent socket
    # the .dockerignore matcher: a bind mount of the context sees only what it keeps
    excluded: Callable[[str], bool] | None = None


def mount_key_parts(step: Step, context_dir: str | None, excluded, digests, step_keys: dict[int, str]) -> list:
    """What of a step's mounts enters its cache key (never cache contents or secret values)."""
    op = step.op
    if not isinstance(op, ExecOp) or not op.mounts:
        return []
    parts = []
    for m in op.mounts:
        entry: dict[str, Any] = {"type": m.type, "target": m.target, "readonly": m.readonly}
        if m.type == "bind":
            entry["source"] = clean(m.source)
            if m.from_stage is not None:
                entry["from"] = step_keys.get(m.from_step) if m.from_step is not None else "scratch"
            elif context_dir:
                entry["content"] = checksum_sources(context_dir, [clean(m.source) or "."], excluded,
                                                    digests=digests)
        elif m.type == "heredoc":  # RUN <<EOF with a shebang: the script is an input (dispatch._heredoc_run)
            entry.update(id=m.id, content=m.source)
        elif m.type in ("cache", "secret", "ssh"):
            entry.update(id=m.id, mode=m.mode, uid=m.uid, gid=m.gid)
            if m.env:  # the variable's name, never its value
                entry["env"] = m.env
            if m.type == "cache" and m.from_stage is not None:  # the base is an input, as in BuildKit's LLB
                entry.update(source=clean(m.source),
                             base=step_keys.get(m.from_step) if m.from_step is not None else "scratch")
        parts.append(entry)
    return parts


def _from_snapshot(m: RunMount, sources: MountSources):
    """The snapshot of the mount's from= root (None: no from=, or scratch)."""
    return sources.snapshots.get(m.from_step) if m.from_step is not None else None


def _cache_dir(sources: MountSources, m: RunMount, stack: ExitStack) -> str:
    store = sources.store
    base = os.path.join(str(store.root), "cachemounts")
    os.makedirs(base, exist_ok=True)
    seed = _from_snapshot(m, sources)
    identity = m.id if seed is None else f"{m.id}\0from snapshot {seed.id}\0{clean(m.source)}"
    name = hashlib.sha256(identity.encode()).hexdigest()[:24]
    path = os.path.join(base, name)
    stack.callback(hold(store.root, name).close)  # `cache prune` never removes a cache mount in use
    if not os.path.isdir(path):
        tmp = tempfile.mkdtemp(dir=base, prefix=".new-")
        os.chmod(tmp, m.mode if m.mode is not None else 0o755)
        os.chown(tmp, m.uid or 0, m.gid or 0)
        try:
            if seed is not None:
                _seed_cache_dir(tmp, [str(p) for p in store.lowerdirs(seed)], m.source)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.rename(tmp, path)
        except OSError:  # another build created it first
            os.rmdir(tmp)
    with open(os.path.join(base, f"{name}.id"), "w") as fh:
        fh.write(m.id)  # for `pybuild cache ls`
    if m.sharing == "shared":
        return path
    lock = open(os.path.join(base, f"{name}.lock"), "w")
    stack.callback(lock.close)
    if m.sharing == "locked":
        fcntl.flock(lock, fcntl.LOCK_EX)
        return path
    try:  # private: the first user gets the shared dir, a concurrent one a fresh throw-away dir
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return path
    except BlockingIOError:
        fresh = tempfile.mkdtemp(dir=base, prefix=".private-")
        stack.callback(shutil.rmtree, fresh, True)
        return fresh


def _seed_cache_dir(dest: str, lowerdirs: list[str], source: str) -> None:
    """Copy `source` of a stage's root into the new cache directory `dest`, in the file-op helper (its mounts
    die with its namespace; paths resolve inside the stage root)."""
    from builder.ops.file import run_helper  # lazy: saves ~11 ms at start-up

    with tempfile.TemporaryDirectory(prefix="cacheseed-", dir=os.path.dirname(dest)) as scratch:
        mountpoints = [os.path.join(scratch, "root"), os.path.join(scratch, "src")]
        for point in mountpoints:
            os.mkdir(point)
        spec = {"root_dir": dest, "mountpoints": mountpoints, "source_lowerdirs": lowerdirs, "kind": "stage",
                "ops": [{"op": "copy", "sources": ["/" + clean(source)], "dest": "/", "kind": "stage",
                         "source_name": "the mount's from= stage or image"}]}
        message = run_helper(spec, None)
    if message is not None:
        raise PybuildError(f"cannot fill the cache mount from its base: {message}", reference="invalid-mount")


def _stage_mount(m: RunMount, sources: MountSources, stack: ExitStack):
    """`from=<stage or image>`: that root's layers, merged by the sandbox; rw writes go to a throw-away upper."""
    from builder.sandbox.spec import Mount  # lazy: saves ~3 ms at start-up

    lowers = tuple(str(p) for p in sources.store.lowerdirs(_from_snapshot(m, sources)))
    upper = work = None
    if not m.readonly:
        scratch = tempfile.mkdtemp(prefix="pybuild-rwbind-")
        stack.callback(shutil.rmtree, scratch, True)
        upper, work = os.path.join(scratch, "upper"), os.path.join(scratch, "work")
        os.mkdir(upper, 0o755)
        os.mkdir(work, 0o700)
    return Mount(type="overlay", source="/" + clean(m.source), target=m.target, readonly=m.readonly,
                 lowerdirs=lowers, upperdir=upper, workdir=work)


def _bind_source(m: RunMount, sources: MountSources, stack: ExitStack) -> str:
    if not sources.context_dir:
        raise PybuildError("a bind mount needs a build context", reference="invalid-mount")
    host = scoped_join(sources.context_dir, clean(m.source))
    if sources.excluded is not None:  # never the ignored files: a filtered copy (builder/context/visible.py)
        return _visible_bind_source(m, sources, stack)
    if not os.path.exists(host):
        raise PybuildError(f"bind mount source {m.source!r} not found in the build context",
                           reference="invalid-mount")
    if m.readonly:
        return host
    scratch = tempfile.mkdtemp(prefix="pybuild-rwbind-")  # rw: writes are discarded with this copy
    stack.callback(shutil.rmtree, scratch, True)
    copy = os.path.join(scratch, "src")
    if os.path.isdir(host):
        shutil.copytree(host, copy, symlinks=True)
    else:
        shutil.copy2(host, copy)
    return copy


def _visible_bind_source(m: RunMount, sources: MountSources, stack: ExitStack) -> str:
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    from builder.context.visible import copy_visible, visible_rel

    assert sources.context_dir and sources.excluded is not None  # _bind_source checked both
    rel = visible_rel(sources.context_dir, clean(m.source), sources.excluded)
    if rel is None:
        raise PybuildError(f"bind mount source {m.source!r} not found in the build context",
                           hint=".dockerignore may exclude it", reference="invalid-mount")
    scratch = tempfile.mkdtemp(prefix="pybuild-bind-")
    stack.callback(shutil.rmtree, scratch, True)
    copy = os.path.join(scratch, "src")
    copy_visible(sources.context_dir, rel, sources.excluded, copy, link=m.readonly)
    return copy


def _secret_source(m: RunMount, sources: MountSources, stack: ExitStack) -> str | None:
    path = sources.secrets.get(m.id)
    if path is None:
        if m.required:
            raise PybuildError(f"secret {m.id!r} is required but was not given",
                               hint=f"pass --secret id={m.id},src=FILE", reference="missing-secret")
        return None
    scratch = tempfile.mkdtemp(prefix="pybuild-secret-")
    stack.callback(shutil.rmtree, scratch, True)
    copy = os.path.join(scratch, "secret")
    shutil.copyfile(path, copy)
    os.chmod(copy, m.mode if m.mode is not None else 0o400)
    os.chown(copy, m.uid or 0, m.gid or 0)
    return copy


def _heredoc_dir(m: RunMount, stack: ExitStack) -> str:
    """A directory holding the heredoc script `m.id` (0755), as BuildKit's scratch mount at /dev/pipes/."""
    scratch = tempfile.mkdtemp(prefix="pybuild-heredoc-")
    stack.callback(shutil.rmtree, scratch, True)
    with open(os.path.join(scratch, m.id), "w", encoding="utf-8") as fh:
        fh.write(m.source)
    os.chmod(os.path.join(scratch, m.id), 0o755)
    os.chmod(scratch, 0o755)
    return scratch


def _ssh_socket(m: RunMount, sources: MountSources, stack: ExitStack) -> str | None:
    """A proxy socket for the agent of the mount's id (closed with ``stack``); None when not given and optional."""
    from builder.ops.sshagent import AgentProxy  # lazy: saves ~9 ms at start-up

    upstream = sources.ssh.get(m.id)
    if upstream is None:
        if m.required:
            raise PybuildError(f"ssh agent {m.id!r} is required but was not given",
                               hint=f"pass --ssh {m.id} (forwards $SSH_AUTH_SOCK) or --ssh {m.id}=SOCKET|KEYFILE",
                               reference="missing-ssh")
        return None
    scratch = tempfile.mkdtemp(prefix="pybuild-ssh-")
    stack.callback(shutil.rmtree, scratch, True)
    proxy = AgentProxy(upstream, os.path.join(scratch, "agent.sock"),
                       mode=m.mode if m.mode is not None else 0o600, uid=m.uid or 0, gid=m.gid or 0)
    stack.callback(proxy.close)
    return proxy.path


def ssh_env(op: ExecOp, sources: MountSources | None) -> tuple[str, ...]:
    """The RUN's environment with SSH_AUTH_SOCK at its first forwarded ssh mount, unless it sets one itself."""
    if sources is None or any(e.startswith("SSH_AUTH_SOCK=") for e in op.env):
        return op.env
    first = next((m.target for m in op.mounts if m.type == "ssh" and m.id in sources.ssh), None)
    return op.env if first is None else (*op.env, f"SSH_AUTH_SOCK={first}")


def run_env(op: ExecOp, sources: MountSources | None) -> tuple[str, ...]:
    """The RUN's environment at run time: ssh_env plus `env=` secrets (values read now, never in a key,
    layer, config or history); a required secret that was not given is an error."""
    env = ssh_env(op, sources)
    for m in op.mounts:
        if m.type != "secret" or not m.env:
            continue
        path = None if sources is None else sources.secrets.get(m.id)
        if path is None:
            if m.required:
                raise PybuildError(f"secret {m.id!r} is required but was not given",
                                   hint=f"pass --secret id={m.id},src=FILE", reference="missing-secret")
            continue
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            value = fh.read()
        if "\0" in value:
            raise PybuildError(f"secret {m.id!r} holds a NUL byte and cannot be the variable {m.env}",
                               reference="invalid-secret")
        env = (*(e for e in env if not e.startswith(m.env + "=")), f"{m.env}={value}")
    return env


def realise(op: ExecOp, sources: MountSources, stack: ExitStack) -> tuple:
    """sandbox Mounts for the op's RUN mounts; cleanups (locks, throw-away copies) go on `stack`."""
    from builder.sandbox.spec import Mount  # lazy: saves ~3 ms at start-up

    out = []
    for m in op.mounts:
        if m.type == "tmpfs":
            out.append(Mount(type="tmpfs", source="tmpfs", target=m.target,
                             options=(f"size={m.size}",) if m.size else ()))
        elif m.type == "cache":
            out.append(Mount(type="bind", source=_cache_dir(sources, m, stack), target=m.target,
                             readonly=m.readonly))
        elif m.type == "bind" and m.from_stage is not None:
            out.append(_stage_mount(m, sources, stack))
        elif m.type == "bind":
            out.append(Mount(type="bind", source=_bind_source(m, sources, stack), target=m.target,
                             readonly=m.readonly))
        elif m.type == "secret":
            path = _secret_source(m, sources, stack)
            if path is not None and m.target:
                out.append(Mount(type="bind", source=path, target=m.target, readonly=True))
        elif m.type == "heredoc":
            out.append(Mount(type="bind", source=_heredoc_dir(m, stack), target=m.target, readonly=True))
        elif m.type == "ssh":
            path = _ssh_socket(m, sources, stack)
            if path is not None:
                out.append(Mount(type="bind", source=path, target=m.target))
    return tuple(out)


def read_secret_flag(spec: str, workdir: str) -> tuple[str, str]:
    """`id=X,src=FILE` or `id=X,env=VAR` (docker buildx) → (id, host file holding the value)."""
    fields = dict(part.partition("=")[::2] for part in spec.split(","))
    secret_id = fields.get("id") or ""
    src = fields.get("src") or fields.get("source")
    env = fields.get("env")
    if not secret_id:
        raise PybuildError(f"invalid --secret {spec!r}", hint="use --secret id=NAME,src=FILE or id=NAME,env=VAR",
                           reference="invalid-secret")
    if src:
        if not os.path.isfile(src):
            raise PybuildError(f"secret file {src!r} not found", reference="invalid-secret")
        return secret_id, os.path.abspath(src)
    name = env or secret_id
    if name not in os.environ:
        raise PybuildError(f"secret {secret_id!r}: environment variable {name} is not set",
                           reference="invalid-secret")
    path = os.path.join(workdir, f"secret-{len(os.listdir(workdir))}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(os.environ[name])
    return secret_id, path
