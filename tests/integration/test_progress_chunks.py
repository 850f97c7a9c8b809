"""Issue 25 acceptance: a RUN whose output arrives in random-sized chunks (testdata/chunky/replay.sh writes the
pieces this test cut: lines and UTF-8 characters split apart, both streams interleaved) shows each line intact and
counted once in plain, in the tty view (under a pty), in rawjson (every line of the stream JSON, the error too)
and in the failure report."""
from __future__ import annotations

import json
import random
import re
import shutil

import pytest

from tests.integration.conftest import TESTDATA
from tests.integration.test_cancel import tty_build

pytestmark = pytest.mark.slow

WORDS = ["café", "naïve", "日本語", "→", "Größe", "ok", "E:", "Unable", "to", "locate", "ünïcödé", "jq", "✓", "x"]


def lines_for(rng: random.Random, stream: str, count: int) -> list[str]:
    return [f"{stream}{n} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for n in range(count)]


def cut(rng: random.Random, data: bytes) -> list[bytes]:
    """Random-sized pieces; the first multi-byte character is always cut in two."""
    forced = next(i for i, b in enumerate(data) if b >= 0xC0) + 1
    cuts, at = {forced}, 0
    while at < len(data):
        at += rng.randint(1, 23)
        cuts.add(at)
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    """(context directory, stdout lines, stderr lines): the last stderr line has no newline."""
    rng = random.Random(25)
    out, err = lines_for(rng, "out", 9), lines_for(rng, "err", 8)
    pieces = {"1": cut(rng, "".join(f"{line}\n" for line in out).encode()),
              "2": cut(rng, ("\n".join(err)).encode())}
    ctx = tmp_path_factory.mktemp("chunks")
    (ctx / "chunks").mkdir()
    order = ["1"] * len(pieces["1"]) + ["2"] * len(pieces["2"])
    rng.shuffle(order)
    taken = {"1": 0, "2": 0}
    for n, stream in enumerate(order):
        (ctx / "chunks" / f"{n:04d}.{stream}").write_bytes(pieces[stream][taken[stream]])
        taken[stream] += 1
    split_chars = sum(1 for p in pieces["1"] + pieces["2"] if not _decodes(p))
    assert split_chars >= 2 and any(b"\n" not in p for p in pieces["1"])  # the cuts really are hostile
    shutil.copy(TESTDATA / "chunky" / "replay.sh", ctx / "replay.sh")
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nCOPY chunks /chunks\nCOPY replay.sh /replay.sh\n"
                                    "RUN /replay.sh\n")
    return ctx, out, err


def _decodes(piece: bytes) -> bool:
    try:
        piece.decode()
        return True
    except UnicodeDecodeError:
        return False


def report_lines(text: str, count: int) -> list[str]:
    """The failure report's output lines: after `[N lines of output]`, N of them (all: N <= the 20 it keeps)."""
    tail = text[text.index(f"[{count} lines of output]\n"):].splitlines()[1:count + 1]
    return tail


def test_plain_and_the_report(pybuild, busybox_image, chunked):
    ctx, out, err = chunked
    proc = pybuild("--progress", "plain", "--no-cache", str(ctx), check=False)
    text = proc.stderr.decode()
    assert proc.returncode == 1, text
    shown = re.findall(r"^#4 \d+\.\d{3} (.*)$", text, flags=re.M)
    assert sorted(shown) == sorted(out + err), text
    assert sorted(report_lines(text, len(out + err))) == sorted(out + err), text


def test_rawjson_every_line_is_json_and_the_logs_are_whole_lines(pybuild, busybox_image, chunked):
    ctx, out, err = chunked
    proc = pybuild("--progress", "rawjson", "--no-cache", str(ctx), check=False)
    assert proc.returncode == 1
    events = [json.loads(line) for line in proc.stderr.decode().splitlines()]  # nothing but JSON
    logs = [e for e in events if e["type"] == "StepLog" and e["number"] == 4]
    for stream, want in (("stdout", out), ("stderr", err)):
        texts = [e["text"] for e in logs if e["stream"] == stream]
        assert "".join(texts).splitlines() == want
        assert all(t.endswith("\n") for t in texts[:-1]), texts  # whole lines only, one or more an event
    error = events[-1]
    assert error["type"] == "BuildError" and "exit code: 3" in error["message"] and error["exit"] == 1
    assert sorted(report_lines(error["context"] + "\n", len(out + err))) == sorted(out + err)


def test_tty_under_a_pty(pybuild, busybox_image, chunked):
    ctx, out, err = chunked
    code, text = tty_build(pybuild.root, "--no-cache", str(ctx), rows=50, cols=200)
    assert code == 1, text
    live = set(re.findall(r"=> => # (.*?) *$", text, flags=re.M))  # lines shown under the running step
    assert live and live <= set(out + err), live - set(out + err)
    summary = text[text.rindex(" > [stage-0 4/4] RUN /bin/sh -c /replay.sh:\n"):].split("------")[0].splitlines()[1:]
    assert sorted(summary) == sorted(out + err), text  # the view's failure summary: each line once, intact
    assert text.count(f"[{len(out + err)} lines of output]") == 1
    assert sorted(report_lines(text, len(out + err))) == sorted(out + err), text
