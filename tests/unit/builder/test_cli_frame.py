"""The command-line frame: global options anywhere, help, unknown words and flags, exit codes, closed pipes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from builder import cli, cliparse
from builder.cliparse import CommandLineError, split_globals
from builder.gotemplate import TemplateError, format_item, render_list

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def pybuild(*args: str, env: dict | None = None, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, cwd=REPO, input=input,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_global_options_before_the_command_move_behind_it():
    assert cli.route(["--root", "/x", "images", "-q"]) == ("images", ["--root", "/x", "-q"])
    assert cli.route(["--root=/x", "--debug", "cache", "ls"]) == ("cache", ["ls", "--root=/x", "--debug"])
    assert cli.route(["-D", "-t", "a", "."]) == ("build", ["--debug", "-t", "a", "."])
    assert cli.route(["."]) == ("build", ["."])
    assert cli.route([]) == ("help", [])
    assert split_globals(["--log-level", "info", "x"]) == (["--log-level", "info"], ["x"])


def test_unknown_command_is_not_a_build_context():
    with pytest.raises(CommandLineError) as exc:
        cli.route(["histroy"])
    assert exc.value.exit_code == 2 and "unknown command 'histroy'" in exc.value.message
    assert "pybuild history" in exc.value.hint


def test_unknown_flag_says_did_you_mean_and_exits_2(capsys):
    assert cli.main(["build", "--no-cahce", "."]) == 2
    err = capsys.readouterr().err
    assert "unknown flag --no-cahce" in err and "did you mean --no-cache?" in err
    assert cli.main(["build", "--tag"]) == 2  # a flag without its value is a usage error too
    assert cli.main(["frobnicate"]) == 2


def test_help_lists_every_command_with_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name
    assert cli.main(["help", "images"]) == 0
    assert "pybuild images" in capsys.readouterr().out


def test_rm_and_force_rm_are_accepted_build_flags():
    args = cli.build_parser().parse_args(["--rm", "--force-rm", "."])
    assert args.rm and args.force_rm and args.context == "."


def test_buildkit_progress_sets_the_default(monkeypatch):
    monkeypatch.setenv("BUILDKIT_PROGRESS", "plain")
    assert cli.progress_from_env() == "plain"
    monkeypatch.setenv("BUILDKIT_PROGRESS", "fancy")
    with pytest.raises(CommandLineError):
        cli.progress_from_env()


def test_version_both_ways():
    for args in (["version"], ["--version"]):
        proc = pybuild(*args)
        assert proc.returncode == 0 and proc.stdout.decode().startswith("pybuild version "), proc.stderr
    assert pybuild("version", "--format", "{{.Version}}").stdout.decode().strip() == cliparse.version()


def test_closed_pipe_ends_quietly_with_status_0():
    big = subprocess.run(f"set -o pipefail; {sys.executable} -c 'import sys; sys.argv[1:]=[\"help\"]; "
                         f"from builder import cli; cli.usage = lambda commands: \"x\" * 2000000; sys.exit(cli.main())' "
                         f"| head -c1 >/dev/null", shell=True, capture_output=True, cwd=REPO, timeout=60,
                         executable="/bin/bash")
    assert big.returncode == 0 and b"Broken pipe" not in big.stderr, big.stderr


def test_go_templates_as_docker_formats_them():
    item = {"Repository": "me/app", "Tag": "v1", "Config": {"Cmd": ["sh", "-c", "x"], "Env": None},
            "RepoTags": ["a:1", "b:2"], "Labels": {"k": "v"}}
    assert format_item("{{.Repository}}:{{.Tag}}", item) == "me/app:v1"
    assert format_item("{{.Config.Cmd}} {{json .Config.Cmd}}", item) == '[sh -c x] ["sh","-c","x"]'
    assert format_item("{{.Missing}}|{{index .RepoTags 1}}|{{join .RepoTags \",\"}}", item) == "<no value>|b:2|a:1,b:2"
    assert format_item("{{range .RepoTags}}{{.}};{{end}}{{if .Config.Env}}env{{else}}none{{end}}", item) == \
        "a:1;b:2;none"
    assert format_item("{{.Labels}} {{index .Labels \"k\"}}", item) == "map[k:v] v"
    assert format_item("json", item).startswith('{"Repository":"me/app"')
    table = render_list("table {{.Repository}}\\t{{.Tag}}", [item, dict(item, Repository="x")], {"Tag": "TAG"})
    assert table.splitlines() == ["REPOSITORY   TAG", "me/app       v1", "x            v1"]
    with pytest.raises(TemplateError):
        format_item("{{range .RepoTags}}", item)
    with pytest.raises(TemplateError):
        format_item("{{nosuchfunc .Tag}}", item)


def test_docker_sizes_and_durations():
    from builder.imagecmd import ago, human

    assert [human(n) for n in (0, 999, 4260, 1_117_000, 72_800_000, 1_110_000_000)] == \
        ["0B", "999B", "4.26kB", "1.12MB", "72.8MB", "1.11GB"]
    now = 1_000_000_000.0
    cases = {0.5: "Less than a second", 1: "1 second", 42: "42 seconds", 70: "About a minute", 600: "10 minutes",
             3700: "About an hour", 3 * 3600: "3 hours", 3 * 86400: "3 days", 21 * 86400: "3 weeks",
             90 * 86400: "3 months", 3 * 365 * 86400: "3 years"}
    assert {d: ago(now - d, now) for d in cases} == {d: text + " ago" for d, text in cases.items()}
