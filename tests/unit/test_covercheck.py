"""CI's coverage gate (scripts/covercheck.py), run as CI runs it on coverage.py JSON reports: it passes when
every group is at its floor, and fails naming the group when one is below or was not measured at all."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "covercheck.py"


def report(tmp_path, files: dict[str, tuple[int, int]]) -> str:
    """A coverage.py JSON report: path → (covered statements, statements)."""
    doc = {"files": {path: {"summary": {"covered_lines": covered, "num_statements": total}}
                     for path, (covered, total) in files.items()}}
    path = tmp_path / "coverage.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _load():
    spec = importlib.util.spec_from_file_location("covercheck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


covercheck = _load()


def gate(*args: str) -> subprocess.CompletedProcess:
    """The gate's exit status and output, run in this process (main(argv)) to keep the test fast."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = covercheck.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


GOOD = {"builder/plan/keys.py": (95, 100), "builder/plan/steps.py": (9, 10), "builder/ops/exec.py": (90, 100),
        "builder/solve.py": (91, 100), "cache/__init__.py": (100, 100), "builder/other.py": (0, 50)}


def test_every_group_at_its_floor_passes_and_the_figures_are_printed(tmp_path):
    done = gate(report(tmp_path, GOOD))
    assert done.returncode == 0, done.stderr
    assert "builder/plan        94.5 %  (104/110 statements)" in done.stdout
    assert "builder/ops         90.0 %" in done.stdout and "builder/other" not in done.stdout


def test_one_group_below_the_floor_fails_naming_it(tmp_path):
    done = gate(report(tmp_path, {**GOOD, "builder/ops/mounts.py": (10, 100)}))
    assert done.returncode == 1
    assert "builder/ops         50.0 %" in done.stdout and "below 90 %: builder/ops;" in done.stderr
    assert gate(report(tmp_path, {**GOOD, "builder/ops/mounts.py": (10, 100)}), "--min", "40").returncode == 0


def test_the_modules_split_out_of_solve_py_count_in_the_solver_group(tmp_path):
    done = gate(report(tmp_path, {**GOOD, "builder/stepkeys.py": (10, 100), "builder/solvenet.py": (10, 10)}))
    assert done.returncode == 1
    assert "builder/solve       52.9 %  (111/210 statements)" in done.stdout, done.stdout
    assert "below 90 %: builder/solve;" in done.stderr


def test_a_group_that_was_not_measured_fails(tmp_path):
    files = {path: figures for path, figures in GOOD.items() if not path.startswith("cache/")}
    done = gate(report(tmp_path, files))
    assert done.returncode == 1 and "cache              not measured" in done.stdout
    assert "below 90 %: cache;" in done.stderr


def test_as_ci_runs_it_a_low_figure_is_exit_status_1(tmp_path):
    low = subprocess.run([sys.executable, str(SCRIPT), report(tmp_path, {**GOOD, "cache/blobs.py": (1, 100)})],
                         capture_output=True, text=True, timeout=120)
    assert low.returncode == 1 and "below 90 %: cache;" in low.stderr
    assert gate(str(tmp_path / "none.json")).returncode == 1  # no report: no pass


def test_make_test_measures_every_group_on_the_fast_set_and_gates_it():
    """CI runs `make test` (.ci/run): its fast-set run measures each group the gate checks, and the gate reads
    the report that run writes; `make test-fast` stays without coverage."""
    makefile = (SCRIPT.parents[1] / "Makefile").read_text()
    recipe = makefile.split("\ntest:\n", 1)[1].split("\n\n", 1)[0]
    coverage = makefile.split("COVERAGE := ", 1)[1].split("\n\n", 1)[0]
    assert '.venv/bin/pytest -m "not slow" $(COVERAGE)' in recipe and ".venv/bin/pytest -m slow" in recipe
    for group, paths in covercheck.GROUPS.items():
        for path in paths:
            assert f"--cov={path.removesuffix('.py').rstrip('/').replace('/', '.')} " in coverage + " ", group
    report = coverage.split("--cov-report=json:", 1)[1].split()[0]
    assert f"scripts/covercheck.py {report}" in recipe
    assert "--cov" not in makefile.split("\ntest-fast:\n", 1)[1].split("\n\n", 1)[0]
    assert "make test" in (SCRIPT.parents[1] / ".ci" / "run").read_text()
