"""Every COPY/ADD/WORKDIR step starts `python -m builder.ops.fileop` as a fresh process, so what that module
imports is paid once per step: it must not pull in the store (cache/, sqlite, zstandard), which the helper
never uses and which took ~45 ms of its ~120 ms start."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_file_op_helper_does_not_import_the_store():
    probe = ("import sys, json, builder.ops.fileop; "
             "print(json.dumps(sorted(m for m in sys.modules if m == 'cache' or m.startswith(('cache.', 'zstandard', "
             "'sqlite3')))))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
