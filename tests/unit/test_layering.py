"""The dependency rule (STYLE.md §2.3): grammar and cache import nothing of ours but themselves; only builder
imports grammar and cache; inside builder, sandbox and progress stay independent of the rest; nothing imports cli;
planning never imports execution (plan ↛ ops/solve/export/build) and export never imports the solver (export ↛
solve/build). Imports inside functions count too (``ast.walk`` sees them)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = {"grammar", "cache", "builder"}
ALLOWED = {"grammar": {"grammar"}, "cache": {"cache"}, "builder": {"builder", "grammar", "cache"}}
SANDBOX_ALLOWED = {"builder.sandbox"}
PROGRESS_ALLOWED = {"builder.progress"}
FORBIDDEN = {  # package → what it must never import, inside builder (STYLE.md §2.3 and §3)
    "builder.plan": ("builder.ops", "builder.solve", "builder.export", "builder.build"),
    "builder.export": ("builder.solve", "builder.build"),
}
EXCEPTIONS: set[tuple[str, str]] = set()  # (module, import) pairs allowed against FORBIDDEN, each with a reason


def forbidden(module: str, name: str) -> str | None:
    """The rule ``module`` breaks by importing ``name``, or None."""
    for package, banned in FORBIDDEN.items():
        if (module == package or module.startswith(package + ".")) and (module, name) not in EXCEPTIONS:
            for b in banned:
                if name == b or name.startswith(b + "."):
                    return f"{module} imports {name}: {package} may not import {b}"
    return None


def imports(path: Path) -> list[str]:
    return imported_names(ast.parse(path.read_text(), filename=str(path)))


def imported_names(tree: ast.AST) -> list[str]:
    """Absolute module names imported anywhere inside ``tree``."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def modules() -> list[Path]:
    return sorted(p for pkg in OURS for p in (REPO / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_follow_the_dependency_rule(path: Path):
    package = path.relative_to(REPO).parts[0]
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    for name in imports(path):
        top = name.split(".")[0]
        if top in OURS:
            assert top in ALLOWED[package], f"{module} imports {name}: {package} may not import {top}"
        if module.startswith("builder.sandbox") and top == "builder":
            assert any(name.startswith(a) for a in SANDBOX_ALLOWED), f"{module} imports {name}"
        if module.startswith("builder.progress") and top == "builder":
            assert any(name.startswith(a) for a in PROGRESS_ALLOWED), f"{module} imports {name}"
        assert name != "builder.cli" or module == "builder.__main__", \
            f"{module} imports builder.cli"
        assert forbidden(module, name) is None, forbidden(module, name)


@pytest.mark.parametrize("module, name", [("builder.plan.dispatch", "builder.ops.mounts"),
                                          ("builder.plan", "builder.solve"),
                                          ("builder.export.image", "builder.solve")])
def test_the_builder_rules_catch_what_they_name(module, name):
    assert forbidden(module, name) is not None
    assert forbidden("builder.solve", name) is None  # solve may import anything below it


# An import inside a function hides an edge from the rule above and from readers; it is there only for the start-up
# time it saves (or to break an import cycle), and a comment says which: on one of its lines, or on the comment
# lines right above a run of imports (one comment covers the imports at the top of a function).
LAZY_REASON = re.compile(r"\d\s?ms\b|start-up|startup|import cycle")


def import_runs(tree: ast.Module) -> list[list[ast.stmt]]:
    """The runs of consecutive import statements inside functions."""
    runs: list[list[ast.stmt]] = []

    def visit(body: list[ast.stmt], in_function: bool) -> None:
        run: list[ast.stmt] = []
        for statement in body:
            if in_function and isinstance(statement, (ast.Import, ast.ImportFrom)):
                run.append(statement)
                continue
            if run:
                runs.append(run)
                run = []
            inner = in_function or isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef))
            for name in ("body", "orelse", "finalbody"):
                block = getattr(statement, name, None)
                if isinstance(block, list):
                    visit(block, inner)
            for handler in getattr(statement, "handlers", None) or []:
                visit(handler.body, inner)
            for case in getattr(statement, "cases", None) or []:
                visit(case.body, inner)
        if run:
            runs.append(run)

    visit(tree.body, False)
    return runs


def unexplained_imports(source: str) -> list[int]:
    """First lines of the runs of imports inside functions that no comment explains (a time such as `~12 ms`,
    start-up, or an import cycle)."""
    lines = source.splitlines()
    missing = []
    for run in import_runs(ast.parse(source)):
        own = [lines[n - 1].partition("#")[2] for st in run for n in range(st.lineno, (st.end_lineno or st.lineno) + 1)]
        above, n = [], run[0].lineno - 1
        while n >= 1 and lines[n - 1].lstrip().startswith("#"):
            above.append(lines[n - 1])
            n -= 1
        if not any(LAZY_REASON.search(text) for text in own + above):
            missing.append(run[0].lineno)
    return missing


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_inside_functions_say_why(path: Path):
    missing = unexplained_imports(path.read_text())
    assert not missing, (f"{path.relative_to(REPO)}: imports inside functions at lines {missing} need a comment "
                         "saying what start-up time they save (`# lazy: saves ~N ms at start-up`) or the import "
                         "cycle they break; else import at the top")


def test_an_import_inside_a_function_without_its_reason_is_caught():
    bare = "import os\n\n\ndef f():\n    import json\n\n    return json\n"
    vague = "def f():\n    import json  # needed here\n    return json\n"
    trailing = "def f():\n    import json  # lazy: saves ~2 ms at start-up\n    return json\n"
    above = ("def f():\n    try:\n        # lazy: an import cycle (json imports this module)\n        import json\n"
             "        import re\n    finally:\n        pass\n")
    two_runs = "def f():\n    import json  # lazy: saves ~2 ms at start-up\n    x = 1\n    import re\n"
    assert unexplained_imports(bare) == [5] and unexplained_imports(vague) == [2]
    assert unexplained_imports(trailing) == [] and unexplained_imports(above) == []
    assert unexplained_imports(two_runs) == [4]
