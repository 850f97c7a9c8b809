"""builder/cli.py's end(): the exit without the interpreter's teardown keeps what a normal exit does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

PROGRAM = """\
import atexit, sys, threading
from builder.cli import end

gate = threading.Event()
def late():
    gate.wait()
    sys.stdout.write("thread done;")
atexit.register(lambda: sys.stdout.write("atexit ran;"))
threading.Thread(target=late).start()  # not a daemon: joined before the exit, as a normal exit joins it
sys.stdout.write("buffered, no newline;")
threading.Timer(0, gate.set).start()
end(int(sys.argv[1]))
sys.stdout.write("never reached")
"""


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as usual


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], cwd=REPO, capture_output=True, timeout=60, env=ENV,
                          **kw)


def test_end_joins_threads_runs_atexit_and_flushes_then_exits_with_the_code():
    for code in (0, 3, 130):
        done = run(str(code))
        assert done.returncode == code, done.stderr
        assert done.stdout == b"buffered, no newline;thread done;atexit ran;", done.stdout


def closed_stdout(program: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``program`` with a stdout pipe whose reader is already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-c", program, *args], cwd=REPO, stdout=write, stderr=subprocess.PIPE,
                              timeout=60, env=ENV)
    finally:
        os.close(write)


def test_end_keeps_python_s_status_when_stdout_cannot_be_flushed():
    """The buffered output cannot be written: the normal exit reports it (status 120), with or without end()."""
    plain = closed_stdout("import sys; sys.stdout.write('buffered'); sys.exit(0)")
    ended = closed_stdout(PROGRAM, "0")
    assert plain.returncode == 120, plain.stderr
    assert ended.returncode == 120 and b"BrokenPipeError" in ended.stderr, ended.stderr


def test_the_module_entry_point_goes_through_end():
    source = (REPO / "builder" / "__main__.py").read_text()
    assert "run()" in source
    done = subprocess.run([sys.executable, "-m", "builder", "version"], cwd=REPO, capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith(b"pybuild version "), done.stderr
