"""grammar/ and cache/ type-check with `mypy --strict`, builder/ with `mypy` (config in pyproject.toml), and stay
that way (issue 27); every C function called through ctypes declares its argument and result types. Skipped where
mypy is not installed (it is in the `test` extras)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STRICT = ["grammar", "cache"]


def _mypy(*args: str, cache: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy")
    return subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(REPO / ".mypy_cache" / cache), *args],
                          cwd=REPO, capture_output=True, text=True)


def test_grammar_and_cache_are_mypy_strict_clean():
    done = _mypy("--strict", *STRICT, cache="strict")
    assert done.returncode == 0, f"mypy --strict {' '.join(STRICT)}:\n{done.stdout}{done.stderr}"
    assert "Success: no issues found" in done.stdout


def test_builder_is_mypy_clean():
    done = _mypy("builder", cache="builder")
    assert done.returncode == 0, f"mypy builder:\n{done.stdout}{done.stderr}"
    assert "Success: no issues found" in done.stdout


def untyped_stores(source: str) -> list[str]:
    """Functions with a `store` parameter that is not annotated (the store is cache.Store in every signature)."""
    return [f"{node.name}:{node.lineno}" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            if arg.arg == "store" and (arg.annotation is None or "Store" not in ast.unparse(arg.annotation))]


def test_the_store_is_typed_wherever_it_is_taken():
    found = {str(p.relative_to(REPO)): untyped_stores(p.read_text()) for p in sorted((REPO / "builder").rglob("*.py"))}
    assert not {path: names for path, names in found.items() if names}
    assert untyped_stores("def f(store, name: str) -> None: ...") == ["f:1"]
    assert untyped_stores("def f(store: Store) -> None: ...") == []


def unreasoned_ignores(source: str) -> list[int]:
    """Lines with a `type: ignore` that give no reason: a comment after it, or a `# ignore:` line just above."""
    lines = source.splitlines()
    return [n for n, line in enumerate(lines, 1) if "type: ignore" in line
            and not re.search(r"type: ignore\S*\s+#\s*\S", line)
            and not any(lines[k].lstrip().startswith("# ignore:") for k in range(max(0, n - 4), n - 1))]


@pytest.mark.parametrize("path", sorted((REPO / "builder").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_type_ignore_in_builder_says_why(path: Path):
    assert not unreasoned_ignores(path.read_text()), f"{path.relative_to(REPO)}: give the type: ignore a reason"


def test_an_ignore_without_a_reason_is_caught():
    assert unreasoned_ignores("x = f()  # type: ignore[misc]\n") == [1]
    assert unreasoned_ignores("x = f()  # type: ignore[misc]  # f is untyped\n") == []
    assert unreasoned_ignores("# ignore: f is untyped\nx = f(\n    1)  # type: ignore[misc]\n") == []


def _is_cdll(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and ast.unparse(node.func) in ("ctypes.CDLL", "CDLL")


def undeclared_c_calls(source: str) -> list[str]:
    """The C functions ``source`` calls through ctypes without declaring both argtypes and restype (code in
    string constants that load a library, such as a helper's `python -c` program, is read too)."""
    trees = [ast.parse(source)]
    trees += [ast.parse(n.value) for n in ast.walk(trees[0])
              if isinstance(n, ast.Constant) and isinstance(n.value, str) and "ctypes.CDLL" in n.value]
    missing: list[str] = []
    for tree in trees:
        libs = {"ctypes.CDLL"} | {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg) and a.annotation is not None
                                  and ast.unparse(a.annotation) == "ctypes.CDLL"}
        functions: set[str] = set()
        returns_lib = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.returns is not None
                       and ast.unparse(f.returns) == "ctypes.CDLL"}
        declared: dict[str, set[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name, value = node.targets[0].id, node.value
                if _is_cdll(value) or (isinstance(value, ast.Call) and ast.unparse(value.func) in returns_lib):
                    libs.add(name)
                elif isinstance(value, ast.Subscript) or (isinstance(value, ast.Call)
                                                          and ast.unparse(value.func) == "getattr"):
                    functions.add(name)
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in (t for top in targets for t in ast.walk(top)):
                    if isinstance(target, ast.Attribute) and target.attr in ("argtypes", "restype"):
                        declared.setdefault(ast.unparse(target.value).rsplit(".", 1)[-1], set()).add(target.attr)
            if isinstance(node, ast.Tuple) and len(node.elts) == 3 and isinstance(node.elts[0], ast.Constant):
                declared.setdefault(str(node.elts[0].value), set()).update(("argtypes", "restype"))  # (name, res, args)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "_declare" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                declared.setdefault(str(node.args[0].value), set()).update(("argtypes", "restype"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and (_is_cdll(func.value) or ast.unparse(func.value) in libs):
                called = func.attr
            elif isinstance(func, ast.Name) and func.id in functions:
                called = func.id
            else:
                continue
            if called not in ("LoadLibrary",) and declared.get(called) != {"argtypes", "restype"}:
                missing.append(called)
    return missing


def _ctypes_modules() -> list[Path]:
    return sorted(p for pkg in ("builder", "cache", "grammar") for p in (REPO / pkg).rglob("*.py")
                  if "ctypes" in p.read_text())


@pytest.mark.parametrize("path", _ctypes_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_c_function_declares_its_types(path: Path):
    assert not undeclared_c_calls(path.read_text()), f"{path.relative_to(REPO)}: declare argtypes and restype"


def test_an_undeclared_c_call_is_caught():
    bare = "import ctypes\n_libc = ctypes.CDLL(None)\n_libc.unshare(1)\n"
    half = bare + "_libc.unshare.argtypes = [ctypes.c_int]\n"
    inline = "import ctypes\nctypes.CDLL(None).unshare(1)\n"
    in_string = 'HOLDER = """\nimport ctypes\nlibc = ctypes.CDLL(None)\nlibc.unshare(1)\n"""\n'
    looked_up = "import ctypes\nf = getattr(ctypes.CDLL(None), 'syncfs', None)\nf(3)\n"
    full = half + "_libc.unshare.restype = ctypes.c_int\n"
    assert undeclared_c_calls(bare) == ["unshare"] and undeclared_c_calls(half) == ["unshare"]
    assert undeclared_c_calls(inline) == ["unshare"] and undeclared_c_calls(in_string) == ["unshare"]
    assert undeclared_c_calls(looked_up) == ["f"] and undeclared_c_calls(full) == []
