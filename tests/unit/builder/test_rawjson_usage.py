"""Issue 25: with --progress rawjson, errors raised before the build starts (argparse usage errors, a bad
--build-arg or --label, --on-error shell without a terminal) are one JSON BuildError event on stderr and nothing
else, with the exit codes they have in the other modes."""
from __future__ import annotations

import io
import json

import pytest

from builder import buildcmd, cli


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(buildcmd, "RAWJSON", False)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    monkeypatch.delenv("BUILDKIT_PROGRESS", raising=False)
    return tmp_path


CASES = [(["--bogus"], 2, "unknown flag --bogus"), (["--jobs", "x"], 2, "invalid int value: 'x'"),
         (["--build-arg", "=x"], 1, "--build-arg '=x': the name is empty"),
         (["--label", "=x"], 1, "--label '=x': the key is empty"),
         (["--on-error", "shell"], 2, "--on-error=shell needs a terminal on stdin")]


@pytest.mark.parametrize("extra, code, message", CASES)
def test_rawjson_usage_errors_are_one_json_event(capsys, fresh, extra, code, message):
    assert cli.main(["build", "--progress", "rawjson", *extra, str(fresh)]) == code
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    event = json.loads(err)
    assert event["type"] == "BuildError" and message in event["message"] and event["exit"] == code
    assert event["hint"]


@pytest.mark.parametrize("extra, code, message", CASES[:3])
def test_other_modes_keep_the_text(capsys, fresh, extra, code, message):
    assert cli.main(["build", "--progress", "plain", *extra, str(fresh)]) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "\nhint: " in err


def test_environment_and_the_last_flag_decide(capsys, fresh, monkeypatch):
    monkeypatch.setenv("BUILDKIT_PROGRESS", "rawjson")
    assert cli.main(["build", "--label", "=x", str(fresh)]) == 1
    assert json.loads(capsys.readouterr().err)["type"] == "BuildError"
    assert cli.main(["build", "--progress=rawjson", "--progress", "plain", "--label", "=x", str(fresh)]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert not buildcmd.rawjson_requested(["--progress", "rawjson", "-q", "."])  # quiet wins, as in the build
    assert buildcmd.rawjson_requested(["--progress", "plain", "--progress=rawjson", "."])
