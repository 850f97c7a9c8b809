"""What grammar.parse builds: node types and fields, stages, spans, directives."""
from __future__ import annotations

import pytest

import grammar
from grammar import nodes
from grammar.dump import dump_buildkit, to_json

SAMPLE = """\ufeff# syntax=docker/dockerfile:1
# escape=\\
ARG BASE=alpine VERSION
FROM --platform=$BUILDPLATFORM ${BASE} AS Build
ENV A=1 B="two words"
ENV LEGACY some value
LABEL org.x=y
RUN --mount=type=cache,target=/c --network=none \\
    apk add \\
      curl
COPY --from=build --chown=1:1 --exclude=*.md --exclude=*.txt ["a b", "/dst/"]
ADD --checksum=sha256:00 --keep-git-dir https://x/y.git /src
WORKDIR /src
USER app:app
EXPOSE 80/tcp 443
VOLUME /data /cache
SHELL ["/bin/bash", "-c"]
HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://x/ || exit 1
STOPSIGNAL SIGTERM
ONBUILD RUN echo child
MAINTAINER someone
CMD ["serve"]
ENTRYPOINT exec run
FROM scratch
COPY --from=build /a /b
"""


@pytest.fixture(scope="module")
def df() -> nodes.Dockerfile:
    return grammar.parse(SAMPLE)


def test_directives_and_stages(df: nodes.Dockerfile) -> None:
    assert df.directives == (("syntax", "docker/dockerfile:1"), ("escape", "\\"))
    assert df.escape == "\\"
    assert [a.args for a in df.meta_args] == [(nodes.ArgDecl("BASE", "alpine"), nodes.ArgDecl("VERSION", None))]
    assert [(s.index, s.name, s.base.image) for s in df.stages] == [(0, "build", "${BASE}"), (1, None, "scratch")]
    assert df.stages[0].base.flag("platform") == "$BUILDPLATFORM"
    assert len(df.instructions) == 21 and len(df.stages[0].instructions) == 17
    assert (df.stages[0].span.line, df.stages[0].span.end_line) == (4, 23)


def test_instruction_fields(df: nodes.Dockerfile) -> None:
    by_name: dict[str, list[nodes.Instruction]] = {}
    for ins in df.instructions:
        by_name.setdefault(ins.name, []).append(ins)
    env, legacy = by_name["ENV"]
    assert env.pairs == (nodes.KeyValue("A", "1"), nodes.KeyValue("B", '"two words"'))
    assert legacy.pairs == (nodes.KeyValue("LEGACY", "some value", legacy=True),)
    run = by_name["RUN"][0]
    assert run.command == nodes.ShellForm("apk add       curl")
    assert run.flag_values("mount") == ("type=cache,target=/c",) and run.flag("network") == "none"
    assert (run.span.line, run.span.col, run.span.end_line) == (8, 1, 10)
    copy = by_name["COPY"][0]
    assert (copy.sources, copy.dest, copy.json_form) == (("a b",), "/dst/", True)
    assert copy.flag_values("exclude") == ("*.md", "*.txt") and copy.flag("from") == "build"
    add = by_name["ADD"][0]
    assert isinstance(add, nodes.Add) and add.flag("keep-git-dir") == "true"
    assert by_name["EXPOSE"][0].ports == ("80/tcp", "443")
    assert by_name["VOLUME"][0].paths == ("/data", "/cache")
    assert by_name["SHELL"][0].argv == ("/bin/bash", "-c")
    health = by_name["HEALTHCHECK"][0]
    assert health.command == nodes.ShellForm("curl -f http://x/ || exit 1") and not health.disabled
    assert health.flag("retries") == "3"
    onbuild = by_name["ONBUILD"][0]
    assert isinstance(onbuild.trigger, nodes.Run) and onbuild.expression == "RUN echo child"
    assert onbuild.trigger.command == nodes.ShellForm("echo child")
    assert by_name["CMD"][0].command == nodes.ExecForm(("serve",))
    assert by_name["ENTRYPOINT"][0].command == nodes.ShellForm("exec run")
    assert by_name["MAINTAINER"][0].maintainer == "someone"
    assert by_name["USER"][0].user == "app:app" and by_name["WORKDIR"][0].path == "/src"
    assert by_name["STOPSIGNAL"][0].signal == "SIGTERM"


def test_flag_spans(df: nodes.Dockerfile) -> None:
    copy = next(i for i in df.instructions if i.name == "COPY")
    assert [(f.name, f.span.line, f.span.col, f.span.end_col) for f in copy.flags][:2] == \
        [("from", 11, 6, 17), ("chown", 11, 19, 29)]


def test_backtick_escape_and_case() -> None:
    df = grammar.parse("# escape=`\nfrom x as Y\nrun echo `\n  C:\\path\nhealthcheck none\n")
    run = df.stages[0].instructions[0]
    assert df.escape == "`" and df.stages[0].name == "y"
    assert run.keyword == "run" and run.name == "RUN" and run.command == nodes.ShellForm("echo   C:\\path")
    assert df.stages[0].instructions[1].disabled


def test_dump_and_json(df: nodes.Dockerfile) -> None:
    dump = dump_buildkit(df).splitlines()
    assert dump[1] == '(from ["--platform=$BUILDPLATFORM"] "${BASE}" "AS" "Build")'
    assert dump[2] == '(env "A" "1" "=" "B" "\\"two words\\"" "=")'
    assert '(onbuild (run "echo child"))' in dump
    data = to_json(df)
    assert data["stages"][0]["name"] == "build"
    assert data["stages"][0]["instructions"][3]["command"] == {"form": "shell", "text": "apk add       curl"}
    import json
    json.dumps(data)  # plain data only


def test_unknown_kept_when_lenient() -> None:
    df = grammar.parse("FROM x\nFOO bar\n", strict=False)
    assert type(df.instructions[1]) is nodes.Instruction and df.instructions[1].keyword == "FOO"
