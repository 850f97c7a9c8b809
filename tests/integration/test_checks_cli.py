"""Build checks through the CLI (issue 20): `build --check` exit codes and report, warnings after a build and as
rawjson events, and `# check=error=true` failing a build before any step runs."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

WARNED = "FROM pybuild/busybox as Build\nENV A 1\nRUN echo ran > /ran\nCMD echo $A\n"


def test_check_reports_like_buildx_and_exits_1(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(WARNED)
    proc = pybuild("build", "--check", str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n" \
           "'as' and 'FROM' keywords' casing do not match\n" in err
    assert "   1 | >>> FROM pybuild/busybox as Build" in err
    assert err.rstrip().endswith("Check complete, 4 warnings have been found!")
    assert "#" not in proc.stdout.decode() and "RUN echo ran" not in err  # nothing was built
    (tmp_path / "Dockerfile").write_text('FROM pybuild/busybox\nCMD ["sh"]\n')
    proc = pybuild("build", "--check", str(tmp_path), check=False)
    assert proc.returncode == 0 and "Check complete, no warnings found." in proc.stderr.decode()


def test_a_build_lists_its_warnings_and_rawjson_carries_them(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(WARNED)
    err = pybuild("--progress", "plain", str(tmp_path)).stderr.decode()
    assert " 4 warnings found:\n - StageNameCasing: Stage name 'Build' should be lowercase (line 1)\n" in err
    assert " - LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" " \
           "format (line 2)" in err
    err = pybuild("--progress", "rawjson", str(tmp_path)).stderr.decode()
    events = [json.loads(line) for line in err.splitlines() if line.strip()]
    found = [(e["rule"], e["line"]) for e in events if e["type"] == "BuildWarning"]
    assert found == [("StageNameCasing", 1), ("FromAsCasing", 1), ("LegacyKeyValueFormat", 2),
                     ("JSONArgsRecommended", 4)]


def test_check_error_true_fails_the_build_before_a_step_runs(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("# check=error=true\n" + WARNED)
    proc = pybuild("--progress", "plain", str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert "error: lint violation found for rules: StageNameCasing, FromAsCasing, LegacyKeyValueFormat, " \
           "JSONArgsRecommended" in err
    assert "RUN echo ran" not in err
    proc = pybuild("--progress", "plain", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all", str(tmp_path))
    assert "warnings found" not in proc.stderr.decode()
