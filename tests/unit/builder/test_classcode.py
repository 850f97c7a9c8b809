"""builder/classcode.py: dataclasses' generated methods from a disk cache are the ones dataclasses compiles."""
from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# Every kind of generated method: __init__ (defaults, factories, kw_only, InitVar, __post_init__), __repr__,
# __eq__, order, __hash__ (frozen and unsafe_hash), frozen __setattr__/__delattr__, slots.
CLASSES = """\
import dataclasses, json, sys
from dataclasses import InitVar, dataclass, field
from typing import ClassVar

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 2
    tags: tuple = ()

@dataclass(order=True, unsafe_hash=True)
class Ordered:
    a: str
    b: list = field(default_factory=list, compare=False, hash=False)
    c: ClassVar[int] = 3

@dataclass(kw_only=True, slots=True)
class Keyed:
    name: str
    extra: dict = field(default_factory=dict, repr=False)
    seed: InitVar[int] = 0
    def __post_init__(self, seed):
        self.extra.setdefault("seed", seed)

def describe(cls):
    methods = {}
    for name in ("__init__", "__repr__", "__eq__", "__lt__", "__hash__", "__setattr__", "__delattr__"):
        fn = cls.__dict__.get(name)
        code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
        if code is not None:
            methods[name] = [code.co_code.hex(), repr(code.co_consts), code.co_names, code.co_varnames,
                             code.co_filename, code.co_qualname, code.co_flags,
                             {k: repr(v) for k, v in getattr(fn, "__annotations__", {}).items()}]
    return methods

p, o, k = Point(1), Ordered("x", [1]), Keyed(name="n", seed=5)
try:
    p.x = 3
    frozen = "no"
except dataclasses.FrozenInstanceError as exc:
    frozen = str(exc)
out = {"methods": {c.__name__: describe(c) for c in (Point, Ordered, Keyed)},
       "values": [repr(p), repr(o), repr(k), p == Point(1, 2), hash(p) == hash(Point(1)), o < Ordered("y"),
                  hash(o) == hash(Ordered("x")), k.extra, frozen]}
"""


def run(program: str, cache: Path | None) -> dict:
    install = f"from builder import classcode; classcode.install({str(cache)!r})\n" if cache else ""
    tail = ("from builder import classcode\nout['compiled'] = len(classcode.compiled)\nclasscode.save()\n"
            if cache else "") + "print(json.dumps(out))\n"
    done = subprocess.run([sys.executable, "-c", install + program + tail], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_cached_methods_are_the_methods_dataclasses_compiles(tmp_path):
    cache = tmp_path / "classcode.marshal"
    plain = run(CLASSES, None)
    first = run(CLASSES, cache)  # compiles, then writes the file
    second = run(CLASSES, cache)  # every text from the file
    assert first.pop("compiled") > 10 and second.pop("compiled") == 0
    assert plain == first == second
    assert os.stat(cache).st_mode & 0o777 == 0o600


def test_an_unusable_file_means_compiling(tmp_path):
    cache = tmp_path / "classcode.marshal"
    plain = run(CLASSES, None)
    cache.write_bytes(b"not a marshal file")
    assert run(CLASSES, cache).pop("compiled") > 10
    cache.write_bytes(sys.version.encode() + b"\0" + b"\xff" * 40)  # the header, then garbage
    got = run(CLASSES, cache)
    assert got.pop("compiled") > 10 and got == plain
    run(CLASSES, cache)  # written back whole
    table = marshal.loads(cache.read_bytes()[len(sys.version) + 1:])
    cache.write_bytes(sys.version.encode() + b"\0" + marshal.dumps({k: b"\xff" + v[1:] for k, v in table.items()}))
    got = run(CLASSES, cache)  # every entry torn: each compiled again
    assert got.pop("compiled") == len(table) and got == plain
    cache.chmod(0o666)  # anyone may write it: not read
    assert run(CLASSES, cache).pop("compiled") > 10
    if os.geteuid() == 0:  # another user's file (planted where this user's cache would be): not read
        run(CLASSES, cache)
        cache.chmod(0o600)
        os.chown(cache, 65534, 65534)
        assert run(CLASSES, cache).pop("compiled") > 10


def test_a_second_command_compiles_no_dataclass_method(tmp_path):
    """`python -m builder` writes what it compiled at exit; the next start of the same modules compiles nothing."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nCOPY a /a\n")
    done = subprocess.run([sys.executable, "-m", "builder", "parse", "-f", str(dockerfile)], cwd=REPO, env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    probe = ("from builder import classcode; classcode.install()\n"
             "import builder.cli, grammar\ngrammar.parse('FROM scratch\\n')\nprint(len(classcode.compiled))")
    again = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "0", again.stderr
