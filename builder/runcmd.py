"""`pybuild run`: start a container from a stored image in the build sandbox (the user's smoke test)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from builder import snapshotter
from builder.errors import ImageNotFoundError, UsageError
from builder.plan.bases import resolve_local
from builder.plan.imageconfig import DEFAULT_PATH
from builder.plan.steps import Step


@dataclass
class RunOptions:
    image: str
    args: list[str] = field(default_factory=list)
    entrypoint: str | None = None
    env: list[str] = field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    volumes: list[str] = field(default_factory=list)
    network: str = "none"
    hostname: str | None = None
    root: str = ""
    read_only: bool = False  # --read-only: no upper layer, the image's files cannot change
    tty: bool = False  # -t: the command runs on a pseudo-terminal relayed to ours (with -i: our keystrokes)
    tmpfs: list[str] = field(default_factory=list)  # --tmpfs DIR[:OPTIONS]


def read_env_files(paths: list[str]) -> list[str]:
    """docker's --env-file: one K=V per line (no quote processing), `K` alone takes pybuild's value, `#` comments."""
    out = []
    for path in paths:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--env-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        for number, line in enumerate(lines, 1):
            text = line.lstrip()
            if not text or text.startswith("#"):
                continue
            key = text.partition("=")[0]
            if not key or any(c.isspace() for c in key):
                raise UsageError(f"--env-file {path}:{number}: variable {key!r} has white space or is empty",
                                 hint="write KEY=VALUE lines")
            out.append(text if "=" in text else key)
    return out


def _tmpfs(specs: list[str]):
    from builder.sandbox.spec import Mount  # lazy: saves ~3 ms at start-up

    mounts = []
    for spec in specs:
        target, _, options = spec.partition(":")
        if not os.path.isabs(target):
            raise UsageError(f"invalid --tmpfs {spec!r}: {target!r} is not an absolute path",
                             hint="use --tmpfs /dir[:size=64m,mode=1777]")
        mounts.append(Mount(type="tmpfs", source="tmpfs", target=target,
                            options=tuple(o for o in options.split(",") if o)))
    return tuple(mounts)


def command_line(entrypoint: tuple[str, ...] | None, cmd: tuple[str, ...] | None, args: list[str],
                 entrypoint_override: str | None) -> list[str]:
    """docker's rules: ARGs replace CMD and are appended to ENTRYPOINT; --entrypoint also drops CMD."""
    if entrypoint_override is not None:
        entry = [entrypoint_override] if entrypoint_override else []
        return entry + list(args)
    return list(entrypoint or ()) + (list(args) if args else list(cmd or ()))


def _mounts(volumes: list[str]):
    from builder.sandbox.spec import Mount  # lazy: saves ~3 ms at start-up

    mounts = []
    for spec in volumes:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not os.path.isabs(parts[1]):
            raise UsageError(f"invalid volume {spec!r}", hint="use -v /host/dir:/container/dir[:ro]")
        mounts.append(Mount(type="bind", source=os.path.abspath(parts[0]), target=parts[1],
                            readonly=len(parts) == 3 and parts[2] == "ro"))
    return tuple(mounts)


EXIT_OWN_ERROR = 125  # docker run's status when the container could not be made (126/127: the command)


def run_image(opts: RunOptions) -> int:
    """`pybuild run`: the command's exit status; docker's 125/126/127 when pybuild, exec or the lookup failed."""
    # lazy: saves ~22 ms at start-up
    from builder.errors import PybuildError
    from builder.sandbox.runner import SandboxError

    try:
        return _run_image(opts)
    except SandboxError as exc:
        code = getattr(exc, "init_code", None)
        raise PybuildError(str(exc), exit_code=code if code in (126, 127) else EXIT_OWN_ERROR,
                           reference="run-failed") from None
    except PybuildError as exc:
        if exc.exit_code == 1:
            exc.exit_code = EXIT_OWN_ERROR
        raise


def _run_image(opts: RunOptions) -> int:
    # lazy: saves ~48 ms at start-up
    from builder.ops import source as source_op
    from builder.sandbox.runner import run
    from builder.sandbox.spec import ContainerSpec
    from cache import Store

    store = Store.open(opts.root)
    try:
        base = resolve_local(store, opts.image)
        if base is None:
            raise ImageNotFoundError(f"image {opts.image!r} is not in the local store ({opts.root})",
                                     hint="build it with `pybuild -t NAME .` first; `pybuild images` lists them")
        assert base.source is not None  # a stored image (resolve_local) always has its layers' source
        argv = command_line(base.config.entrypoint, base.config.cmd, opts.args, opts.entrypoint)
        if not argv:
            raise UsageError("no command specified", hint="the image has no CMD or ENTRYPOINT: pass one")
        snapshot = None
        if base.source is not None:
            step = Step(id=0, stage=0, kind="source", op=base.source, parent=None, created_by="")
            snapshot, _ = source_op.execute(store, step)
        env = dict(base.config.env)
        env.setdefault("PATH", DEFAULT_PATH)
        if opts.tty:
            env.setdefault("TERM", os.environ.get("TERM") or "xterm")
        for item in opts.env:
            key, sep, value = item.partition("=")
            env[key] = value if sep else os.environ.get(key, "")
        mutable = store.prepare(snapshot)
        try:
            spec = ContainerSpec(argv=tuple(argv), lowerdirs=tuple(str(p) for p in mutable.lowerdirs),
                                 upperdir=None if opts.read_only else str(mutable.upper),
                                 workdir=None if opts.read_only else str(mutable.work),
                                 env=tuple(f"{k}={v}" for k, v in env.items()),
                                 cwd=opts.workdir or base.config.workdir or "/",
                                 user=opts.user if opts.user is not None else base.config.user,
                                 hostname=opts.hostname or base.source.manifest_digest[7:19],
                                 network=opts.network, mounts=_mounts(opts.volumes) + _tmpfs(opts.tmpfs),
                                 tty=opts.tty, snapshotter=snapshotter.current(store.root))
            sys.stdout.flush()
            if opts.tty:
                from builder.terminal import relay  # lazy: saves ~6 ms at start-up

                status = relay(lambda fd: run(spec, stdin=fd, stdout=fd, stderr=fd))
            else:
                status = run(spec, stdin=None, stdout=None, stderr=None)
        finally:
            store.abort(mutable)
    finally:
        store.close()
    return status.code
