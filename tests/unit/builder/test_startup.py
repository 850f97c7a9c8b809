"""builder/startup.py: the collector paused while pybuild's modules load, resumed (with them frozen) before the work."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def probe(program: str) -> str:
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def test_the_entry_point_pauses_the_collector_until_a_command_s_modules_are_in():
    program = ("import gc, builder.__main__\nbefore = gc.isenabled()\nfrom builder import cli\n"
               "cli.dispatch('version', [])\nprint(f'{before},{gc.isenabled()},{gc.get_freeze_count() > 1000}')")
    assert probe(program) == "False,True,True"


def test_a_build_collects_again_once_its_modules_are_in(tmp_path):
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    program = ("import gc, builder.__main__\nfrom builder import cli, build\nseen = []\n"
               "real = build.build\nbuild.build = lambda *a, **k: (seen.append(gc.isenabled()), real(*a, **k))[1]\n"
               f"code = cli.main(['build', '--check', '--root', {str(tmp_path / 'root')!r}, "
               f"{str(tmp_path / 'ctx')!r}])\nprint(f'{{code}},{{seen}}')")
    assert probe(program) == "0,[True]"


def test_callers_that_did_not_begin_keep_their_collector():
    program = ("import gc\nfrom builder import cli\ncli.main(['version'])\n"
               "print(f'{gc.isenabled()},{gc.get_freeze_count()}')")
    assert probe(program) == "True,0"


def test_the_helpers_modules_load_on_the_caller_s_thread_and_the_zygote_starts_beside():
    """builder/prestart.py: imported in a thread they took turns for the GIL with the build's own imports and the
    zygote started ~25 ms later; now only its spawn and the wait for its 'ready' are on the thread."""
    program = ("import sys, threading\nseen = []\n"
               "class Watch:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'builder.ops.helpers':\n"
               "            seen.append(threading.current_thread().name)\n"
               "sys.meta_path.insert(0, Watch())\n"
               "from builder.prestart import Helpers\nh = Helpers()\nserver = h.take()\nzygote = server.parent_pid\n"
               "server.close()\nprint(f'{seen},{zygote > 0}')")
    assert probe(program) == "['MainThread'],True"


def test_importing_the_helpers_module_leaves_the_importer_s_collector_and_dataclasses_alone():
    """Only the zygote (`python -m builder.ops.helpers`) pauses its collector and uses the dataclass code cache."""
    program = ("import gc, dataclasses\nimport builder.ops.helpers\n"
               "print(f'{gc.isenabled()},{gc.get_freeze_count()},{\"exec\" in vars(dataclasses)}')")
    assert probe(program) == "True,0,False"
