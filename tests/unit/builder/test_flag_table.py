"""The one flag table (builder/plan/features.py): every flag the grammar accepts has a state, implemented ones
name tests that exist and fail when the flag is ignored, refused ones fail at their flag, README shows the table."""
from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import grammar
from builder.errors import PybuildError
from builder.plan import features
from builder.plan.bases import SCRATCH
from builder.plan.planner import plan
from grammar.flags import ALLOWED

REPO = Path(__file__).resolve().parents[3]


def planned(text: str, **kwargs):
    df = grammar.parse(text, filename="Dockerfile")
    return plan(df, build_args={}, target=None, resolve_image=lambda ref: SCRATCH, **kwargs)


def test_every_flag_the_grammar_accepts_has_a_state():
    grammar_flags = {(inst, name) for inst, table in ALLOWED.items() for name in table}
    missing = sorted(grammar_flags - set(features.FLAGS))
    assert not missing, f"flags the grammar accepts without a state in builder/plan/features.py: {missing}"
    assert not set(features.FLAGS) - grammar_flags, "the table names flags the grammar does not accept"
    assert {f.state for f in [*features.FLAGS.values(), *features.MOUNT_OPTIONS.values()]} <= {
        features.IMPLEMENTED, features.REFUSED}


@functools.lru_cache(maxsize=None)
def _defined_tests(path: str) -> frozenset[str]:
    tree = ast.parse((REPO / path).read_text())
    return frozenset(n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_"))


def _table():
    return [(f"{i} --{n}", f) for (i, n), f in features.FLAGS.items()] + \
           [(f"--mount {n}=", f) for n, f in features.MOUNT_OPTIONS.items()]


@pytest.mark.parametrize("what, feature", _table(), ids=[w for w, _ in _table()])
def test_each_entry_is_proven(what, feature):
    if feature.state == features.IMPLEMENTED:
        assert feature.tests, f"{what} is implemented but names no test"
        for ref in feature.tests:
            path, _, name = ref.partition("::")
            assert name in _defined_tests(path), f"{what}: {ref} does not exist"
        return
    assert feature.example, f"{what} is refused but has no example line"
    with pytest.raises(PybuildError) as info:
        planned(f"FROM scratch\n{feature.example}\n")
    flag = "--" + what.split("--")[1].split("=")[0] if "--mount" not in what else "--mount"
    col = feature.example.index(flag) + 1
    assert info.value.message.startswith(f"Dockerfile:2:{col}: "), info.value.message
    assert "not supported by pybuild yet" in info.value.message and info.value.reference == "unsupported-flag"


def test_a_misspelled_mount_key_fails_at_its_flag():
    with pytest.raises(PybuildError) as info:
        planned("FROM scratch\nRUN true\nRUN --network=none --mount=type=cache,target=/c,shareing=locked true\n")
    exc = info.value
    assert exc.message.startswith("Dockerfile:3:20: unexpected key 'shareing' in 'shareing=locked'"), exc.message
    assert exc.hint == "did you mean sharing=?"


def test_readme_table_is_the_generated_one():
    text = (REPO / "README.md").read_text()
    assert features.BEGIN in text and features.END in text
    assert features.readme_with_table(text) == text, "run: python -m builder.plan.features --write"
    printed = subprocess.run([sys.executable, "-m", "builder.plan.features"], capture_output=True, text=True,
                             cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert printed in text


# Tests named by the table for flags whose effect shows in the plan (they fail when the flag is ignored).

def test_from_platform_is_checked():
    with pytest.raises(PybuildError, match="FROM --platform=linux/s390x"):
        planned("FROM --platform=linux/s390x scratch\n" if os.uname().machine != "s390x" else
                "FROM --platform=linux/amd64 scratch\n")


def test_run_mounts_reach_the_op():
    graph = planned("FROM scratch\nRUN --mount=type=tmpfs,dst=/t,size=1m --mount=type=bind,src=s,destination=/d "
                    "--mount=type=cache,target=/c,sharing=locked,ro --mount=type=secret,id=s,required true\n")
    got = [(m.type, m.target, m.source, m.sharing, m.readonly, m.required, m.size) for m in graph.steps[-1].op.mounts]
    assert got == [("tmpfs", "/t", "", "shared", False, False, "1m"), ("bind", "/d", "s", "shared", True, False, ""),
                   ("cache", "/c", "", "locked", True, False, ""),
                   ("secret", "/run/secrets/s", "", "shared", False, True, "")]


def test_healthcheck_flags_reach_the_config():
    graph = planned("FROM scratch\nHEALTHCHECK --interval=5s --timeout=2s --start-period=1m --start-interval=1s "
                    "--retries=4 CMD true\n")
    assert graph.stages[0].config.healthcheck == {
        "Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Timeout": 2_000_000_000,
        "StartPeriod": 60_000_000_000, "StartInterval": 1_000_000_000, "Retries": 4}


def test_cache_sharing_private_and_locked(tmp_path):
    import fcntl
    from contextlib import ExitStack

    from builder.ops.mounts import MountSources, _cache_dir
    from builder.plan.steps import RunMount

    class Root:  # _cache_dir needs only the store's root for a mount without from=
        root = tmp_path

    sources = MountSources(store=Root(), context_dir=None, secrets={})
    with ExitStack() as first:
        shared = _cache_dir(sources, RunMount("cache", "/c", id="x", sharing="private"), first)
        with ExitStack() as second:  # the first user still holds it: a private second user gets a fresh dir
            other = _cache_dir(sources, RunMount("cache", "/c", id="x", sharing="private"), second)
            assert other != shared and os.path.isdir(other)
            assert _cache_dir(sources, RunMount("cache", "/c", id="x", sharing="shared"), second) == shared
        lock = next(tmp_path.joinpath("cachemounts").glob("*.lock"))
        with open(lock) as fh:  # held: a locked user would wait
            with pytest.raises(BlockingIOError):
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.parametrize("text, words", [
    ("FROM pybuild/busybox:${TAG}\n", "FROM argument 'TAG' is not declared"),
    ("ARG TAG\nFROM pybuild/busybox:$TAG\n", "ARG TAG is declared without a value"),
    ("ARG REG\nFROM ${REG}/busybox@${DIGEST}\n", "FROM argument 'DIGEST' is not declared"),
    ("FROM ${BASE}\n", "FROM argument 'BASE' is not declared")])
def test_an_undefined_arg_in_from_is_named_at_the_from_line(text, words):
    with pytest.raises(PybuildError) as info:
        planned(text)
    line = text.count("\n")
    assert info.value.message.startswith(f"Dockerfile:{line}:1: {words}") and "UndefinedArgInFrom" in \
        info.value.message, info.value.message
    assert "--build-arg" in info.value.hint and info.value.reference == "undefined-arg-in-from"


@pytest.mark.parametrize("text", ["FROM busybox${SUFFIX}\n", "ARG V=1\nFROM localhost:5000/a/b:v$V\n",
                                  "FROM scratch AS base\nFROM base${X}\n"])
def test_an_undefined_arg_that_still_names_an_image_is_no_error(text):
    planned(text)


def test_copy_link_is_a_layer_on_an_empty_root_merged_on_the_parent():
    from builder.plan.steps import MergeOp

    graph = planned("FROM scratch\nWORKDIR /w\nCOPY --link a b/ ./\nCOPY --link --chown=app a /x\n")
    mkdir, layer, merge, named = graph.steps
    assert layer.parent is None and layer.kind == "file" and layer.op.actions[0].dest == "/w/"
    assert merge.kind == "merge" and merge.op == MergeOp(layer.id) and merge.parent == mkdir.id
    assert merge.deps == (layer.id,) and named.parent == merge.id and named.kind == "file"  # a name: in place
    assert [h.step for h in graph.stages[0].history] == [mkdir.id, merge.id, named.id]
