"""Issue 25: a step's output is cut into lines per stream, whatever chunks the pipes deliver (testdata/chunky
writes lines in pieces, one UTF-8 character split in two); each line is shown intact and counted once, in plain,
rawjson and the failure report; a heredoc's body stays out of the step's one-line title."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.integration.conftest import TESTDATA

pytestmark = pytest.mark.slow

STDOUT = ["abcd", "efgh", "café au lait"]
STDERR = ["E: Unable to locate package jq", "W: last words without a newline"]


def chunky_context(tmp_path):
    shutil.copy(TESTDATA / "chunky" / "chunky.sh", tmp_path / "chunky.sh")
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nCOPY chunky.sh /chunky.sh\nRUN /chunky.sh\n")
    return tmp_path


def test_plain_shows_whole_lines_per_stream_and_the_report_counts_them(pybuild, busybox_image, tmp_path):
    proc = pybuild("--progress", "plain", "--no-cache", str(chunky_context(tmp_path)), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    shown = re.findall(r"^#3 \d+\.\d{3} (.*)$", err, flags=re.M)
    assert sorted(shown) == sorted(STDOUT + STDERR), err
    report = err[err.index("[5 lines of output]"):]
    for line in STDOUT + STDERR:
        assert f"\n{line}\n" in report + "\n", report


def test_rawjson_logs_are_whole_lines_and_every_line_is_json(pybuild, busybox_image, tmp_path):
    proc = pybuild("--progress", "rawjson", "--no-cache", str(chunky_context(tmp_path)), check=False)
    assert proc.returncode == 1
    events = [json.loads(line) for line in proc.stderr.decode().splitlines() if line.startswith("{")]
    logs = [e for e in events if e["type"] == "StepLog"]
    assert all(e["text"].endswith("\n") for e in logs[:-1]), logs
    by_stream = {s: "".join(e["text"] for e in logs if e["stream"] == s) for s in ("stdout", "stderr")}
    assert by_stream["stdout"].splitlines() == STDOUT
    assert by_stream["stderr"].splitlines() == STDERR


def test_a_heredoc_title_is_one_line(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN <<EOF\necho one\necho two\nEOF\n")
    err = pybuild("--progress", "plain", "--no-cache", str(tmp_path)).stderr.decode()
    titles = [line for line in err.splitlines() if re.match(r"#2 \[", line)]
    assert titles == ["#2 [stage-0 2/2] RUN <<EOF (echo one...)"], err
    assert re.findall(r"^#2 \d+\.\d{3} (.*)$", err, flags=re.M) == ["one", "two"]


def test_rawjson_ends_a_failed_build_with_its_error_as_json(pybuild, busybox_image, tmp_path):
    proc = pybuild("--progress", "rawjson", "--no-cache", str(chunky_context(tmp_path)), check=False)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and lines
    events = [json.loads(line) for line in lines]  # nothing but JSON on the stream
    assert events[-1]["type"] == "BuildError" and "exit code: 3" in events[-1]["message"]
    assert events[-1]["exit"] == 1 and "[5 lines of output]" in events[-1]["context"]
