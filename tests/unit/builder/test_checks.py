"""Build checks (issue 20): every BuildKit rule fires on a Dockerfile that breaks it, with BuildKit's message and
line, and stays quiet on the corrected Dockerfile; the `# check=` directive and BUILDKIT_DOCKERFILE_CHECK.

The cases follow the examples of each rule's page in BuildKit's documentation (docs/rules/*.md); the messages are
BuildKit's ruleset.go formats."""
from __future__ import annotations

import pytest

import grammar
from builder import checks
from builder.errors import PybuildError
from builder.plan.bases import SCRATCH
from builder.plan.planner import plan

# (rule, bad Dockerfile, expected message, line, good Dockerfile)
CASES = [
    ("StageNameCasing", "FROM scratch AS BuilderBase\n", "Stage name 'BuilderBase' should be lowercase", 1,
     "FROM scratch AS builder-base\n"),
    ("FromAsCasing", "FROM scratch as builder\n", "'as' and 'FROM' keywords' casing do not match", 1,
     "FROM scratch AS builder\n"),
    ("NoEmptyContinuation", "FROM scratch\nEXPOSE \\\n\n80\n", "Empty continuation line", 2,
     "FROM scratch\nEXPOSE \\\n# a comment is fine\n80\n"),
    ("ConsistentInstructionCasing", "FROM scratch\nCOPY a /a\ncopy b /b\n",
     "Command 'copy' should match the case of the command majority (uppercase)", 3,
     "FROM scratch\nCOPY a /a\nCOPY b /b\n"),
    ("DuplicateStageName", "FROM scratch AS builder\nFROM scratch AS builder\n",
     'Duplicate stage name "builder", stage names should be unique', 2,
     "FROM scratch AS builder\nFROM scratch AS builder2\n"),
    ("ReservedStageName", "FROM scratch AS scratch\n", 'Stage name should not use the same name as reserved stage '
     '"scratch"', 1, "FROM scratch AS foo\n"),
    ("JSONArgsRecommended", "FROM scratch\nENTRYPOINT my-program start\n",
     "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals", 2,
     'FROM scratch\nENTRYPOINT ["my-program", "start"]\n'),
    ("MaintainerDeprecated", "FROM scratch\nMAINTAINER moby@example.com\n",
     "Maintainer instruction is deprecated in favor of using label", 2,
     'FROM scratch\nLABEL org.opencontainers.image.authors="moby@example.com"\n'),
    ("UndefinedArgInFrom", "FROM node:22${VARIANT}\n", "FROM argument 'VARIANT' is not declared", 1,
     "ARG VARIANT=-alpine\nFROM node:22${VARIANT}\n"),
    ("UndefinedArgInFrom", "ARG VARIANT=-alpine\nFROM node:22${VARAINT}\n",
     "FROM argument 'VARAINT' is not declared (did you mean VARIANT?)", 2, "ARG VARIANT=-alpine\nFROM node:22${VARIANT}\n"),
    ("WorkdirRelativePath", "FROM scratch\nWORKDIR app/src\n",
     'Relative workdir "app/src" can have unexpected results if the base image changes', 2,
     "FROM scratch\nWORKDIR /usr/local/app\nWORKDIR app/src\n"),
    ("UndefinedVar", "FROM scratch\nCOPY $foo .\n", "Usage of undefined variable '$foo'", 2,
     "FROM scratch\nARG foo\nCOPY $foo .\n"),
    ("UndefinedVar", "FROM scratch\nENV PATH=/usr/bin\nENV PATH=$PAHT:/usr/local/bin\n",
     "Usage of undefined variable '$PAHT' (did you mean $PATH?)", 3,
     "FROM scratch\nENV PATH=/usr/bin\nENV PATH=$PATH:/usr/local/bin\n"),
    ("MultipleInstructionsDisallowed", 'FROM scratch\nENTRYPOINT ["echo", "1"]\nENTRYPOINT ["echo", "2"]\n',
     "Multiple ENTRYPOINT instructions should not be used in the same stage because only the last one will be "
     "used", 2, 'FROM scratch\nENTRYPOINT ["echo", "2"]\n'),
    ("LegacyKeyValueFormat", "FROM scratch\nENV DEPS curl git make\n",
     '"ENV key=value" should be used instead of legacy "ENV key value" format', 2,
     'FROM scratch\nENV DEPS="curl git make"\n'),
    ("RedundantTargetPlatform", "FROM --platform=$TARGETPLATFORM scratch\n",
     "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior", 1,
     "FROM scratch\n"),
    ("SecretsUsedInArgOrEnv", "FROM scratch\nARG AWS_SECRET_ACCESS_KEY\n",
     'Do not use ARG or ENV instructions for sensitive data (ARG "AWS_SECRET_ACCESS_KEY")', 2,
     "FROM scratch\nARG PUBLIC_KEY_FILE\n"),
    ("InvalidDefaultArgInFrom", "ARG TAG\nFROM busybox:${TAG}\n",
     "Default value for ARG busybox:${TAG} results in empty or invalid base image name", 2,
     "ARG TAG=latest\nFROM busybox:${TAG}\n"),
    ("FromPlatformFlagConstDisallowed", "FROM --platform=linux/amd64 scratch AS builder\n",
     'FROM --platform flag should not use constant value "linux/amd64"', 1,
     "FROM --platform=linux/amd64 scratch AS builder_amd64\n"),
    ("ExposeProtoCasing", "FROM scratch\nEXPOSE 80/TcP\n", "Defined protocol '80/TcP' in EXPOSE instruction should "
     "be lowercase", 2, "FROM scratch\nEXPOSE 80/tcp\n"),
    ("ExposeInvalidFormat", "FROM scratch\nEXPOSE 127.0.0.1:80:80\n", "EXPOSE instruction should not define an IP "
     "address or host-port mapping, found '127.0.0.1:80:80'", 2, "FROM scratch\nEXPOSE 80\n"),
]


def warnings_of(text: str, build_args=None, ignore=None) -> list[checks.Warning]:
    df = grammar.parse(text, filename="Dockerfile")
    unmatched: list = []
    try:
        plan(df, build_args=build_args or {}, target=None, resolve_image=lambda ref: SCRATCH, unmatched=unmatched)
    except PybuildError:
        pass  # a Dockerfile that cannot be planned is still checked (InvalidDefaultArgInFrom's case)
    found, _ = checks.for_build(df, text, build_args or {}, tuple(unmatched), ignore or [])
    return found


@pytest.mark.parametrize("rule,bad,message,line,good", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_rule_fires_with_buildkits_message_and_line(rule, bad, message, line, good):
    found = [(w.rule, w.message, w.span.line) for w in warnings_of(bad)]
    assert (rule, message, line) in found
    assert [w for w in warnings_of(good) if w.rule == rule] == []


def test_every_rule_of_the_table_has_a_case_and_a_documentation_link():
    assert {c[0] for c in CASES} | {"CopyIgnoredFile"} == set(checks.RULES)
    assert all(rule.url.startswith("https://docs.docker.com/go/dockerfile/rule/") for rule in checks.RULES.values())


def test_copy_ignored_file():
    bad = warnings_of("FROM scratch\nCOPY ./tmp/dir /app\n", ignore=["tmp"])
    assert [(w.rule, w.message) for w in bad] == [
        ("CopyIgnoredFile", 'Attempting to Copy file "./tmp/dir" that is excluded by .dockerignore')]
    assert warnings_of("FROM scratch\nCOPY ./src /app\n", ignore=["tmp"]) == []


def test_the_check_directive_skips_rules_and_the_build_arg_replaces_it():
    text = "# check=skip=JSONArgsRecommended,FromAsCasing\nFROM scratch as base\nCMD run\nENV A 1\n"
    assert [w.rule for w in warnings_of(text)] == ["LegacyKeyValueFormat"]
    assert warnings_of(text.replace("skip=JSONArgsRecommended,FromAsCasing", "skip=all")) == []
    rules = [w.rule for w in warnings_of(text, build_args={"BUILDKIT_DOCKERFILE_CHECK": "skip=LegacyKeyValueFormat"})]
    assert rules == ["FromAsCasing", "JSONArgsRecommended"]


def test_error_true_and_bad_options():
    df = grammar.parse("# check=error=true\nFROM scratch\n", filename="Dockerfile")
    assert checks.config_for(df, {}).error
    error = checks.failure(warnings_of("# check=error=true\nFROM scratch as a\nCMD x\n"))
    assert error.message == "lint violation found for rules: FromAsCasing, JSONArgsRecommended"
    with pytest.raises(PybuildError, match="invalid check option"):
        checks.parse_config("skip")
    with pytest.raises(PybuildError, match="failed to parse check option"):
        checks.parse_config("error=maybe")


def test_shell_instruction_and_json_forms_quiet_json_args_recommended():
    assert warnings_of('FROM scratch\nSHELL ["/bin/bash", "-c"]\nCMD echo hi\n') == []
    assert warnings_of('FROM scratch AS a\nSHELL ["/bin/sh", "-c"]\nFROM a\nCMD echo hi\n') == []


def test_declared_args_and_build_args_are_defined():
    assert warnings_of("FROM scratch\nARG V\nWORKDIR /$V\n") == []
    assert warnings_of("ARG B=scratch\nFROM $B\nARG B\nLABEL x=$B\n") == []
    assert [w.rule for w in warnings_of("FROM scratch\nLABEL x=$TARGETARCH\n")] == ["UndefinedVar"]
    assert warnings_of("FROM scratch\nARG TARGETARCH\nLABEL x=$TARGETARCH\n") == []
