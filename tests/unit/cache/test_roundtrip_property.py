"""Property: for any tree, commit is deterministic and import reproduces the tree exactly."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache import Store

from .helpers import build_tree, snapshot_tree

NAMES = st.text(alphabet="abcé -_.~xyz", min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..") and not n.startswith(".wh."))


@st.composite
def trees(draw) -> list[tuple]:
    spec: list[tuple] = []
    dirs = [""]
    files: list[str] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(1, 12))):
        parent = draw(st.sampled_from(dirs))
        name = draw(NAMES)
        path = f"{parent}/{name}" if parent else name
        if path in used:
            continue
        used.add(path)
        kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink"] if files else ["file", "dir"]))
        if kind == "file":
            spec.append(("file", path, draw(st.binary(max_size=3000)), draw(st.sampled_from([0o644, 0o755, 0o600, 0o4755]))))
            files.append(path)
        elif kind == "dir":
            spec.append(("dir", path, draw(st.sampled_from([0o755, 0o700, 0o1777]))))
            dirs.append(path)
        elif kind == "symlink":
            spec.append(("symlink", path, draw(st.sampled_from(files + ["/abs/target", "../up"]))))
        else:
            spec.append(("hardlink", path, draw(st.sampled_from(files))))
    return spec


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=trees(), compression=st.sampled_from(["gzip", "zstd"]))
def test_commit_import_round_trip(spec, compression):
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Store.open(Path(tmp) / "a"), Store.open(Path(tmp) / "b")
        try:
            layers = []
            for _ in range(2):
                m = a.prepare(None)
                build_tree(m.upper, spec)
                snap, layer = a.commit(m, compression=compression)
                layers.append(layer)
            assert layers[0] == layers[1]
            with a.open_blob(layer.blob.digest) as f:
                b.put_blob_file(f)
            imported = b.import_layer(None, layer.blob)
            assert imported.diff_id == layer.diff_id
            assert snapshot_tree(imported.path) == snapshot_tree(snap.path)
            a.settle()  # a commit's temp dir goes once its snapshot is on disk and ready
            assert os.listdir(Path(tmp) / "a" / "tmp") == []
        finally:
            a.close()
            b.close()
