"""The dependency rule (STYLE.md §2.3): grammar and cache import nothing of ours but themselves; only builder
imports grammar and cache; inside builder, sandbox and progress stay independent of the rest; nothing imports cli;
planning never imports execution (plan ↛ ops/solve/export/build) and export never imports the solver (export ↛
solve/build). Imports inside functions count too (``ast.walk`` sees them)."""
from __future__ import annotations

import ast
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
