"""builder/fastpath.py: an unchanged, fully cached rebuild is replayed from its memo, and only then."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Pybuild, busybox_context
from tests.integration.test_cache_behaviour import LOADER

DOCKERFILE = """\
FROM fp/base
COPY a.txt /a.txt
RUN cat /a.txt > /copy.txt
COPY sub/ /sub/
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Pybuild:
    """A store of this module's own: tests here retag its base image."""
    tool = Pybuild(tmp_path_factory.mktemp("fastpath-store"))
    tool("-t", "fp/base", str(busybox_context(tmp_path_factory.mktemp("fp-base"))))
    return tool


@pytest.fixture
def ctx(tmp_path, own) -> Path:
    path = tmp_path / "ctx"
    (path / "sub").mkdir(parents=True)
    (path / "Dockerfile").write_text(DOCKERFILE)
    (path / "a.txt").write_text("a\n")
    (path / "sub" / "b.txt").write_text("b\n")
    own("-t", "fp/app", str(path))  # builds
    own("-t", "fp/app", str(path))  # fully cached: leaves the memo (without the context's fingerprint)
    own("-t", "fp/app", str(path))  # fully cached: completes it
    return path


def build(own: Pybuild, ctx: Path, tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, bool]:
    """(the finished process, whether it was a replay: the planner was never imported)."""
    seen = tmp_path / "modules.json"
    cmd = [sys.executable, "-c", LOADER, str(seen), "build", "--root", str(own.root), "-t", "fp/app", *extra,
           str(ctx)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=300)
    loaded = json.loads(seen.read_text())
    assert done.returncode == 0, done.stderr.decode()
    return done, "builder.plan.planner" not in loaded["modules"]


def normalised(text: str) -> str:
    text = re.sub(r'"(ts|elapsed)": [0-9.e-]+', r'"\1": 0', text)
    return re.sub(r" in [0-9.]+s(;|$)", r" in 0s\1", text, flags=re.M)


@pytest.mark.parametrize("mode", ["plain", "rawjson", "quiet"])
def test_replay_shows_what_the_full_path_shows(own, ctx, tmp_path, mode):
    full = own("--progress", mode, "--no-cache-filter", "", "-t", "fp/app", str(ctx))  # a flag: not memoised
    iid = tmp_path / "iid"
    done, replayed = build(own, ctx, tmp_path, "--progress", mode, "--iidfile", str(iid))
    assert replayed
    assert normalised(done.stderr.decode()) == normalised(full.stderr.decode())
    assert done.stdout == full.stdout
    assert iid.read_text() in full.stdout.decode()
    assert re.search(r"^#\d+ CACHED$", done.stderr.decode(), re.M) or mode != "plain"
    summary = r"^#summary 0 steps run, 4 cached \(4 in all\) in [0-9.]+s; image \S+ \(uncompressed layers\)$"
    assert re.search(summary, done.stderr.decode(), re.M) or mode != "plain"  # issue 25: the summary, replayed
    assert ('"type": "BuildSummary", "steps": 4, "ran": 0, "cached": 4' in done.stderr.decode()) == (mode == "rawjson")


def test_changed_content_with_the_same_size_and_mtime_is_built(own, ctx, tmp_path):
    st = os.stat(ctx / "a.txt")
    (ctx / "a.txt").write_text("A\n")
    os.utime(ctx / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells
    done, replayed = build(own, ctx, tmp_path, "--progress", "plain")
    assert not replayed
    assert re.search(r"^#\d+ \[stage-0 2/4\] COPY a.txt /a.txt\n#\d+ DONE", done.stderr.decode(), re.M)


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_a_new_file_in_a_copied_directory_is_built(own, ctx, tmp_path):
    (ctx / "sub" / "c.txt").write_text("c\n")
    done, replayed = build(own, ctx, tmp_path, "--progress", "plain")
    assert not replayed
    own("-t", "fp/app", str(ctx))  # memo for the new state ...
    own("-t", "fp/app", str(ctx))
    done, replayed = build(own, ctx, tmp_path, "--progress", "plain")
    assert replayed  # ... replayed next time


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_a_retagged_base_is_not_replayed(own, ctx, tmp_path):
    before = build(own, ctx, tmp_path, "-q")[0].stdout
    other = tmp_path / "other-base"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM fp/base\nRUN echo other > /other\n")
    own("-t", "fp/base", str(other))
    try:
        done, replayed = build(own, ctx, tmp_path, "-q")
        assert not replayed and done.stdout != before
    finally:
        own("-t", "fp/base", str(busybox_context(tmp_path / "bb")))


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_pruned_cache_and_removed_tag(own, ctx, tmp_path):
    """A memo naming pruned records is not trusted; an untagged image is tagged again by the replay."""
    image = build(own, ctx, tmp_path, "-q")[0].stdout.decode().strip()
    subprocess.run([sys.executable, "-c", "import sys; from cache import Store; s = Store.open(sys.argv[1]);"
                    " s.untag('docker.io/fp/app:latest'); s.close()", str(own.root)], cwd=REPO, check=True)
    done, replayed = build(own, ctx, tmp_path, "-q")
    assert replayed and done.stdout.decode().strip() == image
    tagged = subprocess.run([sys.executable, "-c", "import sys; from cache import Store; s = Store.open(sys.argv[1]);"
                             " print(s.resolve('docker.io/fp/app:latest').manifest.digest); s.close()",
                             str(own.root)], cwd=REPO, check=True, capture_output=True).stdout.decode()
    assert tagged.strip() in build(own, ctx, tmp_path, "--progress", "plain")[0].stdout.decode()
    own("cache", "prune", "--all")
    done, replayed = build(own, ctx, tmp_path, "--progress", "plain")
    assert not replayed
    assert re.search(r"^#\d+ \[stage-0 3/4\] RUN [^\n]*\n#\d+ DONE", done.stderr.decode(), re.M)


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_a_racy_context_is_not_vouched_for(own, tmp_path):
    path = tmp_path / "racy"
    path.mkdir()
    (path / "Dockerfile").write_text("FROM fp/base\nCOPY a.txt /a.txt\n")
    (path / "a.txt").write_text("a\n")
    soon = time.time_ns() + 3_600_000_000_000  # as a change within the timestamp tick before the build looked
    os.utime(path / "a.txt", ns=(soon, soon))
    for _ in range(3):
        assert not build(own, path, tmp_path, "-q")[1]
    os.utime(path / "a.txt", ns=(1, 1))  # long ago; the ctime (now) is older than RACY_NS after one full build
    replays = [build(own, path, tmp_path, "-q")[1] for _ in range(4)]
    assert replays[-1] and not replays[0]
