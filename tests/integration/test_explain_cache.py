"""Issue 25: --explain-cache names what changed: the files of a COPY source, the base image's digests, every
changed part of a RUN, and --no-cache as the reason."""
from __future__ import annotations

import re

import pytest

from tests.integration.conftest import busybox_context

pytestmark = pytest.mark.slow


def explained(pybuild, ctx, *flags: str) -> list[str]:
    err = pybuild("--progress", "plain", "--explain-cache", *flags, str(ctx)).stderr.decode()
    return re.findall(r"^#\d+ (cache (?:hit|miss)[^\n]*)$", err, flags=re.M)


def test_an_edited_file_of_a_50_file_copy_is_named(pybuild, busybox_image, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i:02}.txt").write_text(f"{i}\n")
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nCOPY src /src\n")
    explained(pybuild, tmp_path)
    (src / "f17.txt").write_text("changed\n")
    (src / "new.txt").write_text("new\n")
    (src / "f03.txt").unlink()
    lines = explained(pybuild, tmp_path)
    miss = next(line for line in lines if "COPY" in line or "src" in line)
    assert "changed: src/f17.txt" in miss and "added: src/new.txt" in miss and "removed: src/f03.txt" in miss, lines


def test_a_rebuilt_base_image_is_named_with_both_digests(pybuild, tmp_path):
    base = busybox_context(tmp_path / "base")
    pybuild("-t", "explain/base", str(base))
    (tmp_path / "Dockerfile").write_text("FROM explain/base\nRUN echo hi > /hi\n")
    explained(pybuild, tmp_path)
    (base / "Dockerfile").write_text((base / "Dockerfile").read_text() + "ENV REBUILT=1\n")
    pybuild("-t", "explain/base", str(base))
    lines = explained(pybuild, tmp_path)
    assert any(re.search(r"base image explain/base changed: sha256:[0-9a-f]{12}\S* -> sha256:[0-9a-f]{12}", line)
               for line in lines), lines


def test_three_changed_parts_of_a_run_are_all_named_and_no_cache_is_the_reason(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nARG A=1\nWORKDIR /w\nRUN echo $A > f\n")
    explained(pybuild, tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nARG A=2\nWORKDIR /v\nUSER 1000\nRUN echo $A > /tmp/f\n")
    lines = explained(pybuild, tmp_path)
    run = [line for line in lines if "command" in line]
    assert run and all(part in run[0] for part in ("command changed", "environment changed: A", "cwd changed",
                                                   "user changed")), lines
    lines = explained(pybuild, tmp_path, "--no-cache")
    assert all("--no-cache" in line for line in lines if line.startswith("cache miss")), lines


def test_a_rebuilt_base_first_reached_under_another_name_is_named(tmp_path):
    """The base's first import was a hit on a record another Dockerfile's FROM made (the same image, built
    under another name): the rebuilt base is still named with both digests."""
    from tests.integration.conftest import Pybuild

    own = Pybuild(tmp_path / "store")
    base = busybox_context(tmp_path / "base")
    own("-t", "other/base", str(base))
    own("-t", "explain/base", str(base))  # the same image under a second name
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "Dockerfile").write_text("FROM other/base AS app\nRUN echo other > /o\n")
    own(str(tmp_path / "other"))  # the source record: identity app/0/source, instruction FROM other/base
    (tmp_path / "Dockerfile").write_text("FROM explain/base\nRUN echo hi > /hi\n")
    assert explained(own, tmp_path)[0].startswith("cache hit")  # the import hits other/base's record
    (base / "Dockerfile").write_text((base / "Dockerfile").read_text() + "ENV REBUILT=1\n")
    own("-t", "explain/base", str(base))
    lines = explained(own, tmp_path)
    assert re.search(r"base image explain/base changed: sha256:[0-9a-f]{12}\S* -> sha256:[0-9a-f]{12}", lines[0]), lines
