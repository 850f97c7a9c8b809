"""Issue 4 acceptance 3 and 4: SIGKILL at random moments, concurrent builds, prune under a size limit."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, mountinfo, _with_root

pytestmark = pytest.mark.slow

DOCKERFILE = """\
FROM pybuild/busybox
ARG N=0
RUN echo "trial $N" > /n && dd if=/dev/urandom of=/blob bs=1M count=6 2>/dev/null
COPY data /data
RUN sha256sum /blob > /blob.sum && echo done >> /n
CMD ["cat", "/n", "/data/x"]
"""


def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "data").mkdir(parents=True)
    (ctx / "data" / "x").write_text("payload\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def popen(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "builder", *_with_root(list(args), root)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_at_random_moments_leaves_a_usable_store(pybuild, busybox_image, tmp_path):
    ctx = context(tmp_path)
    rng = random.Random(4)
    before = mountinfo(pybuild.root, tmp_path)
    trials = 20
    for trial in range(trials):
        proc = popen(pybuild.root, "--progress", "plain", "--build-arg", f"N={trial}", "-t", f"kill/t{trial}",
                     str(ctx))
        time.sleep(rng.uniform(0.05, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        pybuild("--build-arg", f"N={trial}", "-t", f"kill/t{trial}", str(ctx))
        out = pybuild("run", f"kill/t{trial}").stdout.decode()
        assert out == f"trial {trial}\ndone\npayload\n"
    deadline = time.time() + 5  # killed builders' sandbox children die with them (PDEATHSIG)
    while mountinfo(pybuild.root, tmp_path) != before and time.time() < deadline:
        time.sleep(0.1)
    assert mountinfo(pybuild.root, tmp_path) == before


def test_two_concurrent_builds_share_one_set_of_layers(pybuild, busybox_image, tmp_path):
    ctx = context(tmp_path)
    marker = f"concurrent-{os.getpid()}"
    procs = [popen(pybuild.root, "--progress", "plain", "--build-arg", f"N={marker}", "-t", f"conc/{i}", str(ctx))
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err.decode()
    ids = {re.search(rb"image id: (\S+)", out).group(1) for out, _ in outs}
    assert len(ids) == 1
    states = [step_states(err.decode()) for _, err in outs]
    assert states[0].keys() == states[1].keys() and len(states[0]) == 4
    for title in states[0]:
        if title.startswith("FROM"):
            continue
        # built by exactly one of the two builds; the other waited on the step's lock and found it CACHED
        assert sorted((states[0][title], states[1][title])) == ["CACHED", "DONE"], (title, states)


def step_states(log: str) -> dict[str, str]:
    titles = dict(re.findall(r"^#(\d+) \[[^\]]*\] (.*)$", log, re.M))
    result = dict(re.findall(r"^#(\d+) (CACHED|DONE)", log, re.M))
    return {title: result[n] for n, title in titles.items()}


def test_prune_keep_storage_respects_the_limit_and_keeps_tagged_images(pybuild, busybox_image, tmp_path):
    root = tmp_path / "store"
    ctx = context(tmp_path)
    from tests.integration.conftest import Pybuild, busybox_context
    local = Pybuild(root)
    local("-t", "pybuild/busybox", str(busybox_context(tmp_path / "bb")))
    local("-t", "keep/app", "--build-arg", "N=keep", str(ctx))
    for n in range(3):  # untagged builds: their layers are reclaimable
        local("--build-arg", f"N=drop{n}", str(ctx))
    before = json.loads(local("cache", "du", "--format", "json").stdout)
    tagged = before["total"] - before["reclaimable"]
    limit = tagged + 1_000_000
    assert before["total"] > limit
    local("cache", "prune", "--keep-storage", str(limit))
    after = json.loads(local("cache", "du", "--format", "json").stdout)
    assert after["total"] <= limit, (before, after)
    assert local("run", "keep/app").stdout.decode() == "trial keep\ndone\npayload\n"
    assert local("run", "pybuild/busybox", "echo", "ok").stdout.decode() == "ok\n"
    proc = local("--progress", "plain", "-t", "keep/app", "--build-arg", "N=keep", str(ctx))
    assert "CACHED" in proc.stderr.decode()
