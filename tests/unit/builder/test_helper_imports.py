"""A build forks RUN's `builder.sandbox.init` and COPY/ADD/WORKDIR's `builder.ops.fileop` from one fork server
(builder/sandbox/forkserver.py), which pays these imports once; `pybuild run`, a cache mount's seeding and the
fork server itself still start fresh interpreters, so what those modules import is paid there per start (on this
machine a bare interpreter starts in ~20 ms; the init took ~100 ms and the file-op helper ~90 ms before these
budgets).

Measured marginal costs of what they must not load: the store package (cache/: sqlite, zstandard, gc) ~45 ms,
ctypes.util ~35 ms (find_library imports subprocess and searches the library path), socket ~9 ms (its enums;
`_socket` does the one ioctl the init needs), shutil ~9 ms and tempfile ~10 ms (needed only on rare paths,
imported there), pathlib ~8 ms, dataclasses ~12 ms (the file-op helper loads the .dockerignore matcher, and
with it dataclasses, only for a context that has a .dockerignore)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_layering import imported_names

REPO = Path(__file__).resolve().parents[3]
STORE = ("cache", "zstandard", "sqlite3", "pyroute2")


def _loaded(module: str, names: tuple[str, ...]) -> list[str]:
    return _loaded_after(f"import {module}", names)


def _loaded_after(statement: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (or their submodules) a fresh interpreter has loaded after ``statement``."""
    probe = (f"import sys, json; {statement}; names = {list(names)!r}; "
             "print(json.dumps(sorted(m for m in sys.modules if any(m == n or m.startswith(n + '.') for n in names))))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("module, forbidden", [
    ("builder.ops.fileop", (*STORE, "ctypes.util", "dataclasses", "builder.context.dockerignore")),
    ("builder.sandbox.init", (*STORE, "ctypes.util", "socket", "shutil", "tempfile", "pathlib")),
    # A fully cached rebuild is mostly interpreter start and imports (~0.16 of ~0.2 s): the layer-writing chain
    # (~9 ms) and platform (~2 ms) are loaded only where used.
    ("builder.build", ("zstandard", "tarfile", "gzip", "cache.compress", "cache.layertar", "cache.unpack",
                       "platform", "_strptime")),
])
def test_step_helpers_import_only_what_they_use(module, forbidden):
    assert _loaded(module, forbidden) == []


def _imports_inside_functions(path: Path) -> set[str]:
    return {name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) for name in imported_names(node)}


def test_the_fork_server_preloads_what_the_helpers_import_late():
    """A build forks its helpers from one zygote: whatever they import inside a function (see above) must already
    be loaded there, or each forked RUN/COPY pays for it again."""
    late = set()
    for path in [REPO / "builder/ops/fileop.py", *sorted((REPO / "builder/sandbox").glob("*.py"))]:
        if path.name not in ("forkserver.py", "netpool.py", "bridge.py"):  # those two: the network pool's helper
            late |= _imports_inside_functions(path)
    assert "builder.context.dockerignore" in late and "tempfile" in late  # the scan sees them
    assert _loaded_after("from builder.ops.helpers import preload; preload()", tuple(sorted(late))) == sorted(late)
