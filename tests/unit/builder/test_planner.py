"""Planning: ARG/ENV scoping, config changes, stage pruning — BuildKit's semantics, without running anything."""
from __future__ import annotations

import pytest

import grammar
from builder.errors import PybuildError
from builder.plan.bases import SCRATCH, BaseImage, normalize_name
from builder.plan.imageconfig import ImageConfig
from builder.plan.planner import plan
from builder.plan.steps import ExecOp, FileOp


def planned(text: str, build_args=None, target=None, bases=None):
    bases = bases or {}
    df = grammar.parse(text, filename="Dockerfile")
    seen = []

    def resolve(ref):
        seen.append(ref)
        return bases.get(ref, SCRATCH)

    return plan(df, build_args=build_args or {}, target=target, resolve_image=resolve), seen


def test_global_args_expand_in_from_only():
    graph, seen = planned("ARG BASE=alpine\nARG TAG\nFROM ${BASE}:${TAG:-3}\nRUN echo $BASE\n",
                          build_args={"TAG": "3.19"})
    assert seen == ["alpine:3.19"]
    run = graph.steps[-1].op
    assert isinstance(run, ExecOp) and not any(e.startswith("BASE=") for e in run.env)


def test_redeclared_arg_brings_the_global_value_and_env_wins():
    graph, _ = planned("ARG V=global\nFROM scratch\nARG V\nENV W=$V\nARG X=argx\nENV X=envx\nWORKDIR /$X\n")
    stage = graph.stages[-1]
    assert dict(stage.config.env) == {"W": "global", "X": "envx"}
    assert stage.config.workdir == "/envx"


def test_entrypoint_resets_an_inherited_cmd():
    base = BaseImage(ImageConfig(cmd=("sh",)), None)
    graph, _ = planned("FROM base\nENTRYPOINT [\"/bin/app\"]\n", bases={"base": base})
    assert graph.stages[-1].config.cmd is None
    graph, _ = planned("FROM base\nCMD [\"x\"]\nENTRYPOINT /bin/app\n", bases={"base": base})
    config = graph.stages[-1].config
    assert config.cmd == ("x",) and config.entrypoint == ("/bin/sh", "-c", "/bin/app")


def test_copy_destination_is_relative_to_workdir():
    graph, _ = planned("FROM scratch\nWORKDIR /app\nCOPY a b/ ./\nCOPY c d\n")
    copies = [s.op.actions[0] for s in graph.steps if isinstance(s.op, FileOp) and s.op.actions[0].op == "copy"]
    assert [(a.sources, a.dest) for a in copies] == [(("a", "b/"), "/app/"), (("c",), "/app/d")]


def test_target_prunes_unused_stages():
    text = "FROM scratch AS a\nRUN a\nFROM scratch AS b\nRUN b\nFROM a AS c\nCOPY --from=b /x /x\n"
    graph, _ = planned(text, target="a")
    assert graph.target == 0 and [s.stage for s in graph.needed(0)] == [0]
    graph, _ = planned(text)
    assert {s.stage for s in graph.needed(2)} == {0, 1, 2}


def test_unknown_target_is_a_clear_error():
    with pytest.raises(PybuildError, match="target stage 'nope' could not be found"):
        planned("FROM scratch AS a\nRUN x\n", target="nope")


def test_expose_and_healthcheck_land_in_the_config():
    graph, _ = planned("FROM scratch\nEXPOSE 80 53/UDP\nHEALTHCHECK --interval=5s --retries=2 CMD true\n")
    config = graph.stages[-1].config
    assert config.exposed_ports == ("80/tcp", "53/udp")
    assert config.healthcheck == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 2}


@pytest.mark.parametrize("name,full", [("me/app", "docker.io/me/app:latest"), ("app", "docker.io/library/app:latest"),
                                       ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
                                       ("quay.io/x/y", "quay.io/x/y:latest")])
def test_normalize_name(name, full):
    assert normalize_name(name) == full


def test_onbuild_triggers_run_first_in_the_child_and_are_not_inherited():
    base = BaseImage(ImageConfig(onbuild=("RUN echo triggered", "ENV FROM_TRIGGER=1")), None)
    graph, _ = planned("FROM base\nRUN echo child\n", bases={"base": base})
    runs = [s.op.argv[-1] for s in graph.steps if isinstance(s.op, ExecOp)]
    assert runs == ["echo triggered", "echo child"]
    config = graph.stages[-1].config
    assert config.onbuild == () and ("FROM_TRIGGER", "1") in config.env


def test_onbuild_is_recorded_in_the_image_config():
    graph, _ = planned("FROM scratch\nONBUILD RUN make\nSTOPSIGNAL SIGKILL\nLABEL a=b\nSHELL [\"/bin/bash\", \"-c\"]\n")
    config = graph.stages[-1].config
    assert config.onbuild == ("RUN make",) and config.stop_signal == "SIGKILL"
    assert config.labels == (("a", "b"),) and config.shell == ("/bin/bash", "-c")
    assert config.to_oci(0)["config"]["Shell"] == ["/bin/bash", "-c"]


def _image(ref: str) -> BaseImage:
    from builder.plan.steps import SourceOp

    return BaseImage(ImageConfig(), SourceOp(ref, "sha256:" + "ab" * 32, ()))


def test_copy_from_a_name_that_is_no_stage_is_an_image_whose_root_is_the_source():
    """BuildKit: `COPY --from=<image>` (no stage of that name) copies out of the image, an implicit FROM."""
    from builder.plan.steps import IMAGE_ROOT, SourceOp

    text = ("FROM scratch AS build\nRUN make\nFROM scratch\nCOPY --from=tools:1 /bin/t /t\n"
            "COPY --from=build /out /out\nCOPY --from=tools:1 /lib/x /x\n")
    graph, seen = planned(text, bases={"tools:1": _image("tools:1")})
    assert seen.count("tools:1") == 1  # resolved once, one source step for both COPYs
    [source] = [s for s in graph.steps if isinstance(s.op, SourceOp)]
    assert source.op.ref == "tools:1" and source.created_by == "FROM tools:1" and source.parent is None
    copies = [s for s in graph.steps if isinstance(s.op, FileOp)]
    assert [(c.op.from_stage, c.op.from_step) for c in copies] == [
        (IMAGE_ROOT, source.id), (0, graph.stages[0].last_step), (IMAGE_ROOT, source.id)]
    assert all(source.id in c.deps for c in (copies[0], copies[2]))
    assert source in graph.needed(1)


def test_copy_from_scratch_is_an_empty_root_and_a_stage_index_is_still_checked():
    from builder.plan.steps import IMAGE_ROOT

    graph, _ = planned("FROM scratch\nCOPY --from=scratch /x /x\n")
    [copy] = [s for s in graph.steps if isinstance(s.op, FileOp)]
    assert (copy.op.from_stage, copy.op.from_step) == (IMAGE_ROOT, None)
    with pytest.raises(PybuildError, match="COPY --from=1: no such stage before this one"):
        planned("FROM scratch\nCOPY --from=1 /x /x\n")


def test_copy_from_an_image_that_cannot_be_resolved_names_the_instruction():
    def resolve(ref):
        if ref == "scratch":
            return SCRATCH
        raise PybuildError(f"image {ref!r} not found", reference="image-not-found")

    df = grammar.parse("FROM scratch\nCOPY --from=nope:latest /x /x\n", filename="Dockerfile")
    with pytest.raises(PybuildError) as err:
        plan(df, build_args={}, target=None, resolve_image=resolve)
    assert err.value.message.startswith("Dockerfile:2:1: COPY --from=nope:latest: image 'nope:latest' not found")
    assert err.value.reference == "image-not-found"


def test_run_mount_from_an_image_depends_on_its_source_step():
    from builder.plan.steps import IMAGE_ROOT, SourceOp

    graph, seen = planned("FROM scratch\nRUN --mount=type=bind,from=tools:1,target=/t /t/run\n",
                          bases={"tools:1": _image("tools:1")})
    [source] = [s for s in graph.steps if isinstance(s.op, SourceOp)]
    [run] = [s for s in graph.steps if isinstance(s.op, ExecOp)]
    [mount] = run.op.mounts
    assert (mount.from_stage, mount.from_step, mount.readonly) == (IMAGE_ROOT, source.id, True)
    assert source.id in run.deps and seen == ["scratch", "tools:1"]


def test_cache_mount_from_a_stage_depends_on_it_and_from_is_refused_for_other_types():
    graph, _ = planned("FROM scratch AS seed\nCOPY --from=scratch / /\nFROM scratch\n"
                       "RUN --mount=type=cache,from=seed,source=/deps,target=/c /x\n")
    [run] = [s for s in graph.steps if isinstance(s.op, ExecOp)]
    [mount] = run.op.mounts
    assert (mount.type, mount.from_stage, mount.source) == ("cache", 0, "/deps")
    assert mount.from_step is not None and mount.from_step in run.deps
    with pytest.raises(PybuildError, match="from= is for bind and cache mounts, not type=tmpfs"):
        planned("FROM scratch AS seed\nFROM scratch\nRUN --mount=type=tmpfs,from=seed,target=/t /x\n")


def test_ssh_mounts_default_to_buildkits_id_and_numbered_sockets():
    graph, _ = planned("FROM scratch\nRUN --mount=type=ssh --mount=type=tmpfs,target=/t "
                       "--mount=type=ssh,id=deploy,required --mount=type=ssh,id=x,target=/a.sock,mode=0660 /x\n")
    [run] = [s for s in graph.steps if isinstance(s.op, ExecOp)]
    ssh = [(m.id, m.target, m.required, m.mode) for m in run.op.mounts if m.type == "ssh"]
    assert ssh == [("default", "/run/buildkit/ssh_agent.0", False, None),
                   ("deploy", "/run/buildkit/ssh_agent.1", True, None), ("x", "/a.sock", False, 0o660)]


def test_ssh_env_points_at_the_first_forwarded_agent_unless_the_run_sets_it():
    from builder.ops.mounts import MountSources, ssh_env

    graph, _ = planned("FROM scratch\nRUN --mount=type=ssh,id=gone --mount=type=ssh,id=here /x\n"
                       "ENV SSH_AUTH_SOCK=/mine\nRUN --mount=type=ssh,id=here /y\n")
    first, second = [s.op for s in graph.steps if isinstance(s.op, ExecOp)]
    sources = MountSources(store=None, context_dir=None, secrets={}, ssh={"here": "/host.sock"})
    assert ssh_env(first, sources)[-1] == "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.1"
    assert ssh_env(second, sources) == second.env and "SSH_AUTH_SOCK=/mine" in second.env
    assert ssh_env(first, MountSources(store=None, context_dir=None, secrets={})) == first.env


def test_build_network_is_the_default_of_every_run():
    """docker build --network: RUN without --network (or with --network=default) uses it; RUN's own flag wins."""
    df = grammar.parse("FROM scratch\nRUN /a\nRUN --network=default /b\nRUN --network=none /c\n", filename="Dockerfile")
    for build_network, expected in [("none", ["none", "none", "none"]), ("host", ["host", "host", "none"]),
                                    ("default", ["default", "default", "none"])]:
        graph = plan(df, build_args={}, target=None, resolve_image=lambda ref: SCRATCH, network=build_network)
        assert [s.op.network for s in graph.steps if isinstance(s.op, ExecOp)] == expected


def test_build_labels_land_on_the_target_stage_over_the_dockerfiles():
    df = grammar.parse("FROM scratch AS one\nLABEL a=1 b=2\nFROM one\nLABEL c=3\n", filename="Dockerfile")
    graph = plan(df, build_args={}, target=None, resolve_image=lambda ref: SCRATCH,
                 labels={"b": "cli", "org.opencontainers.image.revision": "abc123"})
    assert dict(graph.stages[1].config.labels) == {"a": "1", "b": "cli", "c": "3",
                                                   "org.opencontainers.image.revision": "abc123"}
    assert dict(graph.stages[0].config.labels) == {"a": "1", "b": "2"}  # only the stage that is built
    graph = plan(df, build_args={}, target="one", resolve_image=lambda ref: SCRATCH, labels={"b": "cli"})
    assert dict(graph.stages[0].config.labels) == {"a": "1", "b": "cli"}


@pytest.mark.parametrize("text, expected", [
    ("linux/amd64", "linux/amd64"), ("amd64", "linux/amd64"), ("linux/x86_64", "linux/amd64"),
    ("Linux/AMD64", "linux/amd64"), ("linux/arm64/v8", "linux/arm64"), ("aarch64", "linux/arm64"),
    ("linux/arm/v7", "linux/arm/v7"), ("armhf", "linux/arm/v7"), ("i386", "linux/386"),
    ("windows/amd64", "windows/amd64")])
def test_platforms_normalise_as_containerd(text, expected):
    from builder.plan.planner import normalize_platform

    assert normalize_platform(text) == expected


def test_from_platform_must_be_the_build_machines():
    from builder.plan.imageconfig import host_architecture

    host = f"linux/{host_architecture()}"
    graph, seen = planned(f"FROM --platform=$BUILDPLATFORM scratch AS a\nFROM --platform={host} scratch\n"
                          "COPY --from=a / /\n")
    assert seen == ["scratch", "scratch"]
    other = "linux/s390x" if host != "linux/s390x" else "linux/amd64"
    with pytest.raises(PybuildError) as err:
        planned(f"ARG P={other}\nFROM --platform=$P scratch\n")
    assert err.value.message.startswith(f"Dockerfile:2:1: FROM --platform={other}: ")
    assert host in err.value.message and "emulat" in err.value.hint


@pytest.mark.parametrize("line, words", [
    ("RUN --mount=type=cache,target=/c,uid=abc true", "uid='abc' is not a number"),
    ("RUN --mount=type=ssh,mode=999 true", "mode='999' is not an octal mode"),
    ("RUN --mount=type=secret,id=x,mode=0x4 true", "mode='0x4' is not an octal mode"),
    ("EXPOSE 80/xyz", "EXPOSE 80/xyz: invalid proto 'xyz'"),
    ("EXPOSE 99999", "EXPOSE 99999: invalid port '99999'"),
    ("STOPSIGNAL SIGFOO", "STOPSIGNAL SIGFOO: invalid signal"),
])
def test_bad_values_are_errors_at_their_line(line, words):
    with pytest.raises(PybuildError) as err:
        planned(f"FROM scratch\n{line}\n")
    col = line.find("--mount") + 1 or 1  # a mount's error points at its flag
    assert err.value.message.startswith(f"Dockerfile:2:{col}: ") and words in err.value.message, err.value.message
    assert err.value.context == f"    2 | {line}"  # the line with its number, as a failed step shows it


def test_expose_ranges_and_protocols_as_docker():
    graph, _ = planned("FROM scratch\nEXPOSE 80 8000-8002/udp 53/UDP 9/sctp 127.0.0.1:8080:81\n")
    assert graph.stages[0].config.exposed_ports == ("80/tcp", "8000/udp", "8001/udp", "8002/udp", "53/udp",
                                                    "9/sctp", "81/tcp")


@pytest.mark.parametrize("value", ["SIGTERM", "TERM", "sigkill", "9", "SIGRTMIN+3", "RTMAX-1"])
def test_stopsignal_takes_names_and_numbers(value):
    graph, _ = planned(f"FROM scratch\nSTOPSIGNAL {value}\n")
    assert graph.stages[0].config.stop_signal == value


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_a_value_that_doubles_on_every_line_is_refused_not_built():
    text = "FROM scratch\nENV A=aaaaaaaa\n" + "ENV A=$A$A\n" * 40
    with pytest.raises(PybuildError, match="expands to more than 4 MiB"):
        planned(text)
