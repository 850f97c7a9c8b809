"""Issue 25: `cache ls --sort size|used|created --filter image=|stage=|type=` (repeatable: all must match), its
two sizes labelled, and `cache du --verbose` listing every record, on a store of this module's own."""
from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Pybuild, busybox_context

pytestmark = pytest.mark.slow

DOCKERFILE = """\
FROM cl/base AS deps
RUN head -c 200000 /dev/urandom > /big
RUN echo small > /small
FROM cl/base AS app
COPY f.txt /f.txt
RUN --mount=type=cache,target=/c,id=cl-mount echo x > /c/x && echo y > /y
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> Pybuild:
    tool = Pybuild(tmp_path_factory.mktemp("cachels-store"))
    tool("-t", "cl/base", str(busybox_context(tmp_path_factory.mktemp("cl-base"))))
    ctx = tmp_path_factory.mktemp("cl-ctx")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "f.txt").write_text("f\n")
    tool("-t", "cl/deps", "--target", "deps", str(ctx))
    tool("-t", "cl/app", str(ctx))
    return tool


def ls(own: Pybuild, *args: str) -> list[dict]:
    return json.loads(own("cache", "ls", "--format", "json", *args).stdout)


def test_filters_combine_with_and(own):
    deps = ls(own, "--filter", "stage=deps")
    assert sorted(r["instruction"] for r in deps) == ["FROM cl/base", "RUN /bin/sh -c echo small > /small",
                                                      "RUN /bin/sh -c head -c 200000 /dev/urandom > /big"]
    assert [r["instruction"] for r in ls(own, "--filter", "stage=deps", "--filter", "type=exec")] \
        == ["RUN /bin/sh -c head -c 200000 /dev/urandom > /big", "RUN /bin/sh -c echo small > /small"]
    files = ls(own, "--filter", "type=file")
    assert "COPY f.txt /f.txt" in [r["instruction"] for r in files] and len(files) >= 2  # the base's COPY too
    assert [r["instruction"] for r in ls(own, "--filter", "type=file", "--filter", "stage=app")] \
        == ["COPY f.txt /f.txt"]
    mounts = ls(own, "--filter", "type=cachemount")
    assert [r["instruction"] for r in mounts] == ["cache mount id=cl-mount"]
    assert ls(own, "--filter", "type=cache-mount") == mounts


def test_image_filter_lists_the_records_of_its_layers(own):
    mine = {r["instruction"] for r in ls(own, "--filter", "image=cl/deps")}
    assert {"RUN /bin/sh -c head -c 200000 /dev/urandom > /big", "RUN /bin/sh -c echo small > /small",
            "COPY busybox /bin/busybox"} <= mine
    assert "COPY f.txt /f.txt" not in mine
    assert ls(own, "--filter", "image=cl/deps", "--filter", "stage=app") == []


@pytest.mark.parametrize("sort, field", [("size", "size"), ("used", "last_used"), ("created", "created")])
def test_sort_puts_the_largest_or_latest_first(own, sort, field):
    listed = ls(own, "--sort", sort)
    values = [r[field] for r in listed]
    assert len(values) >= 7 and values == sorted(values, reverse=True)
    if sort == "size":
        assert listed[0]["instruction"] == "COPY busybox /bin/busybox"  # 2 MB unpacked + 1 MB compressed


def test_sizes_are_labelled(own):
    table = own("cache", "ls").stdout.decode().splitlines()
    assert table[0].split() == ["ID", "TYPE", "INSTRUCTION", "STAGE", "UNPACKED", "COMPRESSED", "CREATED", "LAST",
                                "USED", "USES", "IN", "USE"]
    big = next(r for r in ls(own) if r["instruction"].endswith("> /big"))
    assert big["unpacked_size"] >= 200000 and big["compressed_size"] >= 200000  # random bytes do not shrink
    assert big["size"] == big["unpacked_size"] + big["compressed_size"] and big["type"] == "exec"


def test_bad_filters_are_one_clear_error(own):
    for bad in ("colour=red", "stage", "type=layer"):
        proc = own("cache", "ls", "--filter", bad, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err and "hint:" in err, err
    proc = own("cache", "ls", "--filter", "image=no/such", check=False)
    assert proc.returncode == 1 and "no image 'no/such'" in proc.stderr.decode()


def test_du_verbose_lists_every_record(own):
    listed = ls(own)
    text = own("cache", "du", "--verbose").stdout.decode()
    assert [line.split()[1] for line in text.splitlines() if line.startswith("ID:")] == [r["id"] for r in listed]
    assert "Unpacked:" in text and "Compressed:" in text and text.rstrip().splitlines()[-1].startswith("cache_mounts:")
    doc = json.loads(own("cache", "du", "--verbose", "--format", "json").stdout)
    assert [r["id"] for r in doc["items"]] == [r["id"] for r in listed] and doc["records"] == len(listed) - 1
    assert "items" not in json.loads(own("cache", "du", "--format", "json").stdout)
