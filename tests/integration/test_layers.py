"""Issue 25: `pybuild layers` reports each layer's changes and the space wasted, as dive computes it, with a CI
gate. The Dockerfile adds 1 MiB in one layer and deletes it in the next, overwrites a file and stores one content
twice; the expected figures are worked out below from the file sizes, the base layers' bytes read from an OCI
export with tarfile (independently of the code under test)."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BIG, OVER1, OVER2, DUP = 1 << 20, 300, 500, 700
DOCKERFILE = """\
FROM pybuild/busybox
COPY big /tmp/big
RUN rm /tmp/big
COPY over1 /etc/over
COPY over2 /etc/over
COPY dup /a/dup
COPY dup /b/dup
"""
SCHEMA_KEYS = {"image", "efficiency", "wastedBytes", "userWastedPercent", "layers", "inefficiencies", "hidden",
               "hiddenBytes", "duplicates"}
BUSYBOX = Path(shutil.which("busybox") or "/bin/busybox")  # what conftest.busybox_context copies
LAYER_KEYS = {"index", "digest", "instruction", "compressedSize", "contentSize", "changes"}


@pytest.fixture(scope="module")
def wasteful(pybuild, busybox_image, tmp_path_factory) -> str:
    ctx = tmp_path_factory.mktemp("wasteful")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    for name, size in (("big", BIG), ("over1", OVER1), ("over2", OVER2), ("dup", DUP)):
        (ctx / name).write_bytes(name.encode()[:1] * size)
    pybuild("-t", "me/wasteful", str(ctx))
    return "me/wasteful"


def base_content(pybuild, tmp_path: Path) -> int:
    """Bytes of the regular files in the base image's layers, read from an OCI layout with tarfile."""
    pybuild("-t", "pybuild/busybox", "--output", f"type=oci,dest={tmp_path / 'oci'}",
            str(Path(__file__).resolve().parents[2] / "testdata" / "busybox"))
    layout = tmp_path / "oci"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    total = 0
    for layer in manifest["layers"]:
        with tarfile.open(layout / "blobs/sha256" / layer["digest"][7:]) as tar:
            total += sum(m.size for m in tar if m.isreg())
    return total


def test_json_reports_the_waste_and_dives_efficiency(pybuild, wasteful, tmp_path):
    doc = json.loads(pybuild("layers", wasteful, "--format", "json").stdout)
    assert set(doc) == SCHEMA_KEYS and all(set(layer) == LAYER_KEYS for layer in doc["layers"])
    assert {(i["path"], i["cumulativeSize"]) for i in doc["inefficiencies"]} == {("/tmp/big", BIG),
                                                                                 ("/etc/over", OVER1 + OVER2)}
    assert doc["wastedBytes"] == BIG + OVER1 + OVER2
    base = base_content(pybuild, tmp_path)
    # dive: Σ smallest size per path / Σ cumulative size per path; the base wastes nothing
    expected = (base + 0 + OVER1 + DUP + DUP) / (base + BIG + OVER1 + OVER2 + DUP + DUP)
    assert doc["efficiency"] == pytest.approx(expected, rel=1e-12)
    # dive's "user" bytes: every layer's content but the first one's (the base's COPY of the busybox binary)
    assert doc["layers"][0]["instruction"].startswith("COPY busybox")
    user = base - BUSYBOX.stat().st_size + BIG + OVER1 + OVER2 + DUP + DUP
    assert doc["userWastedPercent"] == pytest.approx((BIG + OVER1 + OVER2) / user, rel=1e-12)
    changes = {layer["index"]: [(c["kind"], c["path"], c["size"]) for c in layer["changes"]]
               for layer in doc["layers"]}
    top = len(doc["layers"]) - 1
    assert changes[top - 5] == [("added", "/tmp/big", BIG)]
    assert changes[top - 4] == [("deleted", "/tmp/big", BIG)]
    assert changes[top - 2] == [("modified", "/etc/over", OVER2)]
    assert [(h["path"], h["size"]) for h in doc["hidden"]] == [("/tmp/big", BIG), ("/etc/over", OVER1)]
    assert doc["hiddenBytes"] == BIG + OVER1
    assert doc["duplicates"] == [{"sha256": doc["duplicates"][0]["sha256"], "paths": ["/a/dup", "/b/dup"],
                                  "size": DUP, "extra_bytes": DUP}]


def test_ci_gate_fails_with_the_paths_and_passes_when_looser(pybuild, wasteful):
    proc = pybuild("layers", wasteful, "--ci", "--highest-wasted-bytes", "20MB", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "FAIL highest-user-wasted-percent" in err and "/tmp/big (1048576 B)" in err and "/etc/over" in err
    assert "FAIL highest-wasted-bytes" not in err
    proc = pybuild("layers", wasteful, "--ci", "--lowest-efficiency", "0.1", "--highest-wasted-bytes", "2MB",
                   "--highest-user-wasted-percent", "1", check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    proc = pybuild("layers", wasteful, "--ci", "--highest-wasted-bytes", "1MB", "--lowest-efficiency", "0",
                   "--highest-user-wasted-percent", "off", check=False)
    assert proc.returncode == 1 and "FAIL highest-wasted-bytes: 1049376 B wasted" in proc.stderr.decode()


def test_tree_and_one_layer(pybuild, wasteful):
    tree = pybuild("layers", wasteful, "--tree").stdout.decode().splitlines()
    rows = {line.split()[2]: (int(line.split()[0]), int(line.split()[1])) for line in tree}
    assert "/tmp/big" not in rows and rows["/etc/over"][1] == OVER2 and rows["/b/dup"][1] == DUP
    assert rows["/b/dup"][0] == rows["/a/dup"][0] + 1
    one = pybuild("layers", wasteful, "--layer", str(rows["/etc/over"][0])).stdout.decode()
    assert "modified" in one and "/etc/over" in one and "/a/dup" not in one
    proc = pybuild("layers", wasteful, "--layer", "99", check=False)
    assert proc.returncode == 1 and "the image has layers 0 to" in proc.stderr.decode()
