"""builder.layers.Analysis on hand-made layer tars: whiteouts of directories, opaque directories, dive's leaves."""
from __future__ import annotations

import io
import tarfile

import pytest

from builder.layers import Analysis, LayerReport


def layer(*entries: tuple[str, int | None]) -> tarfile.TarFile:
    """A layer tar of (name, size) entries; size None = a directory."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, size in entries:
            info = tarfile.TarInfo(name)
            if size is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = size
                tar.addfile(info, io.BytesIO(name.encode()[-1:] * size))
    data.seek(0)
    return tarfile.open(fileobj=data, mode="r|")


def analysed(*layers: tarfile.TarFile) -> Analysis:
    analysis = Analysis()
    for index, tar in enumerate(layers):
        analysis.add_layer(LayerReport(index, f"sha256:{index}", f"step {index}", 0), tar)
    return analysis


def test_a_deleted_directory_counts_the_bytes_below_it():
    a = analysed(layer(("d", None), ("d/x", 100), ("d/sub", None), ("d/sub/y", 50), ("keep", 10)),
                 layer((".wh.d", 0)))
    assert a.layers[1].changes[0].kind == "deleted" and a.layers[1].changes[0].size == 150
    # leaves: d/x 100, d/sub/y 50, keep 10 in layer 0; the whiteout of d (150) in layer 1
    # dive keys on the leaves of each layer: /d was no leaf below, so its deletion costs the score nothing
    assert a.inefficiencies() == [] and a.score() == 1.0
    assert a.hidden == [("/d/sub/y", 50, 0, 1), ("/d/x", 100, 0, 1)]  # what dive misses
    assert [row[0] for row in a.tree()] == ["/keep"]


def test_an_opaque_directory_hides_what_was_below():
    a = analysed(layer(("etc", None), ("etc/a", 5), ("etc/b", 7)),
                 layer(("etc", None), ("etc/.wh..wh..opq", 0), ("etc/c", 3)))
    kinds = sorted((c.kind, c.path, c.size) for c in a.layers[1].changes)
    assert kinds == [("added", "/etc/c", 3), ("deleted", "/etc/a", 5), ("deleted", "/etc/b", 7)]
    assert [row[0] for row in a.tree()] == ["/etc/", "/etc/c"]
    assert a.hidden == [("/etc/a", 5, 0, 1), ("/etc/b", 7, 0, 1)]


def test_a_file_written_twice_is_wasted_whole_and_paths_are_normalised():
    a = analysed(layer(("./f", 300)), layer(("/f", 500)), layer(("f", 500)))
    assert a.inefficiencies() == [("/f", 1300, 3)]
    assert a.wasted_bytes() == 1300
    assert a.user_wasted_fraction() == pytest.approx(1300 / 1000)
    assert a.hidden == [("/f", 300, 0, 1), ("/f", 500, 1, 2)]
    assert a.duplicates() == []  # the same path again is hidden, not duplicated


def test_deep_nesting_does_not_exhaust_the_stack():
    deep = "/".join(f"d{i}" for i in range(1500))
    a = analysed(layer((deep + "/f", 7)), layer((".wh.d0", 0)))
    assert a.layers[1].changes[0].size == 7 and a.hidden == [("/" + deep + "/f", 7, 0, 1)]
    assert a.tree() == []
    assert len(analysed(layer((deep + "/f", 7))).tree()) == 1501
