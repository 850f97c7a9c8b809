"""Issue 25: every build that stores an image ends with a summary (steps run / cached, total time, image size) in
plain and as a rawjson event; quiet stays quiet (the fast path's replay: tests/integration/test_fastpath.py)."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

pytestmark = pytest.mark.slow


def test_summary_counts_steps_run_and_cached_and_sizes_the_image(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM pybuild/busybox\nRUN head -c 300000 /dev/urandom > /r\n"
                                         f"RUN echo {tmp_path.name} > /two\n")  # new to the session's store
    first = pybuild("--progress", "plain", "--no-cache-filter", "", str(tmp_path)).stderr.decode()
    found = re.findall(r"^#summary (\d+) steps? run, (\d+) cached \((\d+) in all\) in [0-9.]+s; "
                       r"image ([0-9.]+)(kB|MB) \(uncompressed layers\)$", first, re.M)
    ran = len(re.findall(r"^#\d DONE ", first, re.M))
    assert found and found[0][:3] == (str(ran), str(3 - ran), "3") and ran >= 2, first  # the base: as imported
    busybox = os.path.getsize(shutil.which("busybox") or "/bin/busybox")  # the base's one file, as a plain tar
    size = float(found[0][3]) * (1e6 if found[0][4] == "MB" else 1e3)
    assert busybox + 300_000 < size < busybox + 600_000, first  # + 300 kB random, the tar headers of its links
    assert first.index("#summary") < first.index("#done")
    (tmp_path / "Dockerfile").write_text(f"FROM pybuild/busybox\nRUN head -c 300000 /dev/urandom > /r\n"
                                         f"RUN echo {tmp_path.name} three > /three\n")
    lines = pybuild("--progress", "rawjson", str(tmp_path)).stderr.decode().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    summary = [e for e in events if e["type"] == "BuildSummary"]
    assert len(summary) == 1 and (summary[0]["steps"], summary[0]["ran"], summary[0]["cached"]) == (3, 1, 2)
    assert summary[0]["size"] > 1_300_000 and summary[0]["elapsed"] > 0 and summary[0]["compressed"] is False
    assert events[-1]["type"] == "BuildDone" and events[-2] == summary[0]


def test_quiet_prints_only_the_image_id(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo q > /q\n")
    done = pybuild("-q", str(tmp_path))
    assert done.stderr == b"" and re.fullmatch(rb"sha256:[0-9a-f]{64}\n", done.stdout)


def test_a_long_layer_compression_shows_its_bytes(pybuild, busybox_image, tmp_path):
    """150 MB that gzip cannot shrink take this 2-core machine several seconds to compress; a layer is stored as
    its tar and compressed when exported, so after a quiet first second the export reports the bytes tarred and
    compressed so far (buildx's "exporting layers")."""
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN head -c 150000000 /dev/urandom > /r\n")
    err = pybuild("--progress", "plain", "--no-cache", "--output", f"type=oci,dest={tmp_path / 'oci'}",
                  str(tmp_path)).stderr.decode()
    found = re.findall(r"^#export-\d+ compressing layer ([0-9.]+)MB tarred, ([0-9.]+)MB compressed$", err, re.M)
    assert found, err
    tarred = [float(t) for t, _ in found]
    assert tarred == sorted(tarred) and tarred[-1] <= 150.1, err
    assert all(float(c) <= float(t) * 1.01 + 0.1 for t, c in found), err
    assert err.index("#2 DONE") < err.index("compressing layer") < err.index("#done"), err


def test_a_slow_stdin_context_shows_its_transfer(pybuild, busybox_image, tmp_path):
    """`pybuild -` reading a context tar that arrives over 1.5 s (pauses between pieces): BuildKit's `[internal]
    load build context` task with the bytes so far, then the build."""
    import io
    import subprocess
    import sys
    import tarfile

    from tests.integration.conftest import REPO, _with_root

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM pybuild/busybox\nCOPY blob /blob\n"), ("blob", b"z" * (3 << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    feeder = ("import sys, time\ndata = sys.stdin.buffer.read()\nfor i in range(0, len(data), 1 << 20):\n"
              "    sys.stdout.buffer.write(data[i:i + (1 << 20)]); sys.stdout.buffer.flush(); time.sleep(0.5)\n")
    feed = subprocess.Popen([sys.executable, "-c", feeder], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    build = subprocess.Popen([sys.executable, "-m", "builder", *_with_root(["build", "--progress", "plain", "-"],
                                                                        pybuild.root)],
                             stdin=feed.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    feed.stdout.close()
    feed.communicate(data, timeout=120)
    out, err = build.communicate(timeout=300)
    text = err.decode()
    assert build.returncode == 0, text
    found = re.findall(r"^#(context-\d+) transferring context ([0-9.]+)MB$", text, re.M)
    assert found and float(found[-1][1]) == pytest.approx(len(data) / 1e6, abs=0.01), text
    task = found[0][0]
    assert f"#{task} [internal] load build context\n" in text and re.search(rf"^#{task} DONE [0-9.]+s$", text, re.M)
    assert text.index(f"#{task} DONE") < text.index("#1 [stage-0 1/2] FROM pybuild/busybox")


def test_the_tty_view_ends_with_the_summary(pybuild, busybox_image, tmp_path):
    from tests.integration.test_cancel import tty_build

    (tmp_path / "Dockerfile").write_text(f"FROM pybuild/busybox\nRUN echo {tmp_path.name} > /t\n")
    code, text = tty_build(pybuild.root, str(tmp_path), rows=30, cols=120)
    assert code == 0, text
    lines = text.rstrip("\n").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("image id: "))
    summary = r"(1 step run, 1|2 steps run, 0) cached \(2 in all\) in [0-9.]+s; image [0-9.]+MB \(uncompressed layers\)"
    assert re.fullmatch(summary, lines[at - 1].rstrip()), text  # the FROM: imported now or already
    assert "FINISHED" in lines[at - 4], text
