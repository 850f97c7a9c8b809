"""One function per instruction: update the stage's config and add steps (BuildKit's dispatchX functions)."""
from __future__ import annotations

import json
import posixpath
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from builder.errors import PybuildError
from builder.plan import entitle
from builder.plan.features import refuse_flags
from builder.plan.heredocs import run_argv
from builder.plan.steps import IMAGE_ROOT, ExecOp, FileAction, FileOp, HistoryItem
from grammar import nodes

if TYPE_CHECKING:
    from builder.plan.planner import Planner, StageState
    from builder.plan.steps import RunMount

# Any: each handler takes the node type its HANDLERS key names (a dict cannot say so per entry)
Handler = Callable[["Planner", "StageState", Any], None]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}



def shown(inst: nodes.Instruction) -> str:
    """The instruction as error context: its first line's number in the gutter, as step errors show it
    (builder/ops/exec.py render_location), with continuation lines joined."""
    return f"{inst.span.line:>5} | {inst.original}"

def _expand(p: "Planner", st: "StageState", word: str, inst: nodes.Instruction) -> str:
    return p.expand(word, st.expand_env(), inst.span)


def _meta(st: "StageState", created_by: str) -> None:
    st.history.append(HistoryItem(created_by, None))


def _command(st: "StageState", command: nodes.Command) -> tuple[str, ...]:
    if isinstance(command, nodes.ExecForm):
        return command.argv
    return (*st.config.shell, command.text)


def _json(argv: tuple[str, ...]) -> str:
    return json.dumps(list(argv))


def dispatch_env(p: "Planner", st: "StageState", inst: nodes.Env) -> None:
    parts = []
    for kv in inst.pairs:
        key = _expand(p, st, kv.key, inst)
        value = _expand(p, st, kv.value, inst)
        st.config = st.config.with_env(key, value)
        parts.append(f"{key}={value}")
    _meta(st, "ENV " + " ".join(parts))


def dispatch_label(p: "Planner", st: "StageState", inst: nodes.Label) -> None:
    parts = []
    for kv in inst.pairs:
        key, value = _expand(p, st, kv.key, inst), _expand(p, st, kv.value, inst)
        st.config = st.config.with_label(key, value)
        parts.append(f"{key}={value}")
    _meta(st, "LABEL " + " ".join(parts))


def dispatch_arg(p: "Planner", st: "StageState", inst: nodes.Arg) -> None:
    for decl in inst.args:
        if decl.name in p.build_args:
            value: str | None = p.build_args[decl.name]
        elif decl.default is not None:
            value = _expand(p, st, decl.default, inst)
        else:
            value = p.arg_value(decl.name)
        st.args[decl.name] = value
    _meta(st, "ARG " + " ".join(d.name + (f"={st.args[d.name]}" if st.args[d.name] is not None else "")
                                for d in inst.args))


def dispatch_cmd(p: "Planner", st: "StageState", inst: nodes.Cmd) -> None:
    argv = _command(st, inst.command)
    st.config = replace(st.config, cmd=argv)
    st.cmd_set = True
    _meta(st, "CMD " + _json(argv))


def dispatch_entrypoint(p: "Planner", st: "StageState", inst: nodes.Entrypoint) -> None:
    argv = _command(st, inst.command)
    st.config = replace(st.config, entrypoint=argv, cmd=st.config.cmd if st.cmd_set else None)
    _meta(st, "ENTRYPOINT " + _json(argv))


PORT_PROTOCOLS = ("tcp", "udp", "sctp")


def _exposed(word: str, inst: nodes.Instruction) -> list[str]:
    """One EXPOSE word as moby's nat.ParsePortSpec reads it: [ip:][hostport:]port[-end][/proto] → port/proto each."""
    spec, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PORT_PROTOCOLS:
        raise PybuildError(f"{inst.span}: EXPOSE {word}: invalid proto {proto!r}", context=shown(inst),
                           hint="a port is NUMBER[-NUMBER][/tcp|udp|sctp]", reference="invalid-port")
    first, _, last = spec.rsplit(":", 1)[-1].partition("-")
    try:
        start, end = int(first), int(last or first)
        if not (0 <= start <= end <= 65535):
            raise ValueError
    except ValueError:
        raise PybuildError(f"{inst.span}: EXPOSE {word}: invalid port {spec.rsplit(':', 1)[-1]!r}",
                           context=shown(inst), hint="a port is NUMBER[-NUMBER][/tcp|udp|sctp] in 0-65535",
                           reference="invalid-port") from None
    return [f"{port}/{proto}" for port in range(start, end + 1)]


def _valid_signal(value: str) -> bool:
    """moby's signal.ParseSignal on Linux: a number 1-64, or a name with or without SIG (RTMIN+n, RTMAX-n too)."""
    import signal  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    if value.isdigit():
        return 1 <= int(value) <= 64
    name = value.upper().removeprefix("SIG")
    offset = re.fullmatch(r"RT(MIN|MAX)([+-]\d+)?", name)
    if offset:
        n = (signal.SIGRTMIN if offset.group(1) == "MIN" else signal.SIGRTMAX) + int(offset.group(2) or 0)
        return signal.SIGRTMIN <= n <= signal.SIGRTMAX
    return f"SIG{name}" in signal.Signals.__members__


def dispatch_expose(p: "Planner", st: "StageState", inst: nodes.Expose) -> None:
    ports = []
    for raw in inst.ports:
        for word in p.lex.process_words(raw, st.expand_env()):
            ports.extend(_exposed(word, inst))
    st.config = replace(st.config, exposed_ports=tuple(dict.fromkeys((*st.config.exposed_ports, *ports))))
    _meta(st, "EXPOSE " + " ".join(ports))


def dispatch_user(p: "Planner", st: "StageState", inst: nodes.User) -> None:
    user = _expand(p, st, inst.user, inst)
    st.config = replace(st.config, user=user)
    _meta(st, "USER " + user)


def dispatch_workdir(p: "Planner", st: "StageState", inst: nodes.Workdir) -> None:
    path = _expand(p, st, inst.path, inst)
    path = posixpath.normpath(posixpath.join(st.config.workdir or "/", path))
    st.config = replace(st.config, workdir=path)
    if path == "/":  # as BuildKit: nothing to create, no layer
        _meta(st, "WORKDIR /")
        return
    # created (with parents, 0755) owned by the image's USER, as BuildKit's Mkdir WithUser
    action = FileAction(op="mkdir", dest=path, chown=st.config.user or None)
    _file_step(p, st, inst, FileOp((action,)), f"WORKDIR {path}")


def dispatch_volume(p: "Planner", st: "StageState", inst: nodes.Volume) -> None:
    paths = [_expand(p, st, w, inst) for w in inst.paths]
    if any(not v for v in paths):
        raise PybuildError(f"{inst.span}: VOLUME specified can not be an empty string", context=shown(inst))
    st.config = replace(st.config, volumes=tuple(dict.fromkeys((*st.config.volumes, *paths))))
    _meta(st, "VOLUME " + _json(tuple(paths)))


def dispatch_shell(p: "Planner", st: "StageState", inst: nodes.Shell) -> None:
    st.config = replace(st.config, shell=inst.argv)
    _meta(st, "SHELL " + _json(inst.argv))


def dispatch_stopsignal(p: "Planner", st: "StageState", inst: nodes.StopSignal) -> None:
    sig = _expand(p, st, inst.signal, inst)
    if not _valid_signal(sig):
        raise PybuildError(f"{inst.span}: STOPSIGNAL {sig}: invalid signal", context=shown(inst),
                           hint="a signal name (SIGTERM, TERM, SIGRTMIN+3) or number", reference="invalid-signal")
    st.config = replace(st.config, stop_signal=sig)
    _meta(st, "STOPSIGNAL " + sig)


def parse_duration(text: str | None, inst: nodes.Instruction) -> int:
    if not text:
        return 0
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise PybuildError(f"{inst.span}: invalid duration {text!r}", hint="use Go durations such as 30s or 1m30s")
    return int(total)


def dispatch_healthcheck(p: "Planner", st: "StageState", inst: nodes.Healthcheck) -> None:
    if inst.disabled or inst.command is None:
        st.config = replace(st.config, healthcheck={"Test": ["NONE"]})
        _meta(st, "HEALTHCHECK NONE")
        return
    if isinstance(inst.command, nodes.ExecForm):
        test = ["CMD", *inst.command.argv]
    else:
        test = ["CMD-SHELL", inst.command.text]
    check: dict = {"Test": test}
    for flag, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                      ("start-interval", "StartInterval")):
        value = parse_duration(inst.flag(flag), inst)
        if value:
            check[key] = value
    retries = inst.flag("retries")
    if retries:
        check["Retries"] = int(retries)
    st.config = replace(st.config, healthcheck=check)
    _meta(st, "HEALTHCHECK " + json.dumps(check, sort_keys=True))


def dispatch_onbuild(p: "Planner", st: "StageState", inst: nodes.Onbuild) -> None:
    st.config = replace(st.config, onbuild=(*st.config.onbuild, inst.expression))  # no history line, as BuildKit


def dispatch_maintainer(p: "Planner", st: "StageState", inst: nodes.Maintainer) -> None:
    _meta(st, "MAINTAINER " + inst.maintainer)


def dispatch_run(p: "Planner", st: "StageState", inst: nodes.Run) -> None:
    argv = _command(st, inst.command)
    script = None  # RUN <<EOF with a shebang: the mount of its script file
    if inst.heredocs and isinstance(inst.command, nodes.ShellForm):
        argv, script = run_argv(st.config.shell, inst)
    env = dict(st.config.env_dict())
    for key, value in st.args.items():
        if value is not None and key not in env:
            env[key] = value
    if "PATH" not in env:
        # lazy: saves <1 ms at start-up (its modules are loaded by then)
        from builder.plan.imageconfig import DEFAULT_PATH
        env["PATH"] = DEFAULT_PATH
    network = inst.flag("network") or "default"
    if network == "default":
        network = p.network
    if network not in ("default", "none", "host"):
        raise PybuildError(f"{inst.span}: unsupported --network={network}", hint="use none, host or default",
                           context=shown(inst), reference="invalid-network")
    if inst.flag("network") == "host":
        entitle.require(p.entitlements, entitle.NETWORK_HOST, inst, "network", shown(inst))
    insecure = inst.flag("security") == "insecure"
    if insecure:
        entitle.require(p.entitlements, entitle.SECURITY_INSECURE, inst, "security", shown(inst))
    mounts = _run_mounts(p, st, inst) + ((script,) if script is not None else ())
    op = ExecOp(argv=argv, env=tuple(f"{k}={v}" for k, v in env.items()), cwd=st.config.workdir or "/",
                user=st.config.user, network=network, mounts=mounts, insecure=insecure)
    flags = " ".join(f"--{f.name}={f.value}" for f in inst.flags if f.name in ("mount", "network", "security"))
    deps = tuple(m.from_step for m in mounts if m.from_step is not None)
    step = p.graph.add(stage=st.index, kind="exec", op=op, parent=st.parent, span=inst.span,
                       created_by=" ".join(x for x in ("RUN", flags, *argv) if x), deps=deps)
    st.parent = step.id
    st.history.append(HistoryItem(step.created_by, step.id))


def _run_mounts(p: "Planner", st: "StageState", inst: nodes.Run) -> tuple:
    # lazy: saves ~2 ms at start-up
    from builder.plan.mountflags import make_mount, parse_mount  # only a RUN with --mount pays for csv

    def stage(name: str) -> tuple[int, int | None]:
        index = int(name) if name.isdigit() else p._stage_ref(name)
        if index is None and not name.isdigit():  # as in BuildKit: not a stage, so an image
            return IMAGE_ROOT, p.image_root(name, st.index, inst.span)
        if index is None or index >= st.index:
            raise PybuildError(f"{inst.span}: --mount from={name}: no such stage before this one",
                               context=shown(inst), reference="invalid-mount")
        return index, p.graph.stages[index].last_step

    mounts: list[RunMount] = []
    for flag in (f for f in inst.flags if f.name == "mount"):
        try:
            mount = make_mount(parse_mount(flag.value or "", lambda w: _expand(p, st, w, inst)), stage,
                               ssh_index=sum(m.type == "ssh" for m in mounts))
            target = posixpath.normpath(posixpath.join(st.config.workdir or "/", mount.target)) if mount.target else ""
            mounts.append(replace(mount, target=target))
        except PybuildError as exc:
            if str(inst.span) in exc.message or str(flag.span) in exc.message:
                raise
            raise PybuildError(f"{flag.span}: {exc.message}", hint=exc.hint, context=shown(inst),
                               reference=exc.reference) from exc
    return tuple(mounts)




def _file_step(p: "Planner", st: "StageState", inst: nodes.Instruction, op: FileOp, created_by: str) -> None:
    deps = (op.from_step,) if op.from_step is not None else ()
    step = p.graph.add(stage=st.index, kind="file", op=op, parent=st.parent, span=inst.span,
                       created_by=created_by, deps=deps)
    st.parent = step.id
    st.history.append(HistoryItem(created_by, step.id))


from builder.plan import filecopy  # noqa: E402  (it uses shown and _file_step above)

HANDLERS: dict[type, Handler] = {
    nodes.Env: dispatch_env, nodes.Label: dispatch_label, nodes.Arg: dispatch_arg, nodes.Cmd: dispatch_cmd,
    nodes.Entrypoint: dispatch_entrypoint, nodes.Expose: dispatch_expose, nodes.User: dispatch_user,
    nodes.Workdir: dispatch_workdir, nodes.Volume: dispatch_volume, nodes.Shell: dispatch_shell,
    nodes.StopSignal: dispatch_stopsignal, nodes.Healthcheck: dispatch_healthcheck,
    nodes.Onbuild: dispatch_onbuild, nodes.Maintainer: dispatch_maintainer, nodes.Run: dispatch_run,
    nodes.Copy: filecopy.dispatch_copy, nodes.Add: filecopy.dispatch_copy,
}


def dispatch(p: "Planner", st: "StageState", inst: nodes.Instruction) -> None:
    handler = HANDLERS.get(type(inst))
    if handler is None:
        raise PybuildError(f"{inst.span}: {inst.name} is not supported here", context=shown(inst))
    refuse_flags(inst)
    handler(p, st, inst)
