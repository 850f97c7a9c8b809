"""COPY --exclude and --parents as BuildKit's dockerfile tests state them (testExcludedFilesOnCopy,
testCopyParents, testCopyRelativeParents, testCopyParentsMissingDirectory), run by the file-op helper's copy on
plain directories."""
from __future__ import annotations

import os

import pytest

from builder.ops.copysel import FileOpError
from builder.ops.fileop import run_copy

FILES = ["dir1/file-101.png", "dir1/file-102.txt", "dir1/file-103.jpeg", "dir2/file-201.pdf", "dir2/file-202.jpeg",
         "dir2/file-203.png", "dir3/file-301.mp3", "dir3/file-302.mpeg"]
TREE = ["test/a/b/c/d/foo", "test/a/b/c/d/e/bay", "test/a/b2/c/d/e/bar", "test/a/b/c2/d/e/baz", "test/a/b/c2/d/e2/baz"]


def _context(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    return root


def _copied(tmp_path, names, sources, dest, **op):
    src = _context(tmp_path / "src", names)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    run_copy({"op": "copy", "sources": sources, "dest": dest, "kind": "stage", **op}, str(out), str(src))
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)


@pytest.mark.parametrize("sources, dest, excludes, expected", [
    (["."], "/1", ["*/*.png", "*/*.jpeg"],
     ["1/dir1/file-102.txt", "1/dir2/file-201.pdf", "1/dir3/file-301.mp3", "1/dir3/file-302.mpeg"]),
    (["."], "/2", ["*/*.pdf", "*/*.txt"],
     ["2/dir1/file-101.png", "2/dir1/file-103.jpeg", "2/dir2/file-202.jpeg", "2/dir2/file-203.png",
      "2/dir3/file-301.mp3", "2/dir3/file-302.mpeg"]),
    (["dir3/"], "/3/", ["*.mp3"], ["3/file-302.mpeg"]),
    (["dir*"], "/4/", ["*.mp3", "*.jpeg", "*.png", "*.pdf", "*.txt"], ["4/file-302.mpeg"]),
    (["dir*"], "/5/", ["*.mp*", "*.jpeg", "*.png", "*.pdf"], ["5/file-102.txt"]),
    (["dir*"], "/6/", ["*"], []),
    (["dir1/file-102.txt"], "/7/", ["*.txt"], ["7/file-102.txt"]),  # the source itself is never excluded
])
def test_exclude_as_buildkits_test(tmp_path, sources, dest, excludes, expected):
    assert _copied(tmp_path, FILES, sources, dest, excludes=excludes) == expected


@pytest.mark.parametrize("sources, expected", [
    (["/test/a/b/./c/d"], ["out/c/d/e/bay", "out/c/d/foo"]),  # middle
    (["/test/a/b/c/d/."], ["out/test/a/b/c/d/e/bay", "out/test/a/b/c/d/foo"]),  # end
    (["./test/a/b/c/d"], ["out/test/a/b/c/d/e/bay", "out/test/a/b/c/d/foo"]),  # start
    (["/test/a/./b/./c"], ["out/b/c/d/e/bay", "out/b/c/d/foo"]),  # double
    (["/test/a/./*/c"], ["out/b/c/d/e/bay", "out/b/c/d/foo", "out/b2/c/d/e/bar"]),  # wildcard
    (["/test/a/b3*/c"], []),  # wildcard-nonexistent
    (["/test/a/b/./c2*"], ["out/c2/d/e/baz", "out/c2/d/e2/baz"]),
    (["/test/a/b*/./c/**/e"], ["out/c/d/e/bar", "out/c/d/e/bay"]),  # doublewildcard
    (["/test/a/b/c*/./d/**/baz", "/test/a/b*/./c/**/bar"],
     ["out/c/d/e/bar", "out/d/e/baz", "out/d/e2/baz"]),  # doubleinputs
    (["**/bar"], ["out/test/a/b2/c/d/e/bar"]),
])
def test_parents_as_buildkits_test(tmp_path, sources, expected):
    assert _copied(tmp_path, TREE, sources, "/out/", parents=True) == expected


def test_parents_keeps_the_source_directories_metadata_and_a_missing_file_fails(tmp_path):
    src = _context(tmp_path / "src", ["foo1/foo2/bar", "foo1/foo2/baz"])
    (src / "foo1").chmod(0o700)
    out = tmp_path / "out"
    out.mkdir()
    run_copy({"op": "copy", "sources": ["foo1/foo2/ba*"], "dest": "/test/", "parents": True, "kind": "stage"},
             str(out), str(src))
    assert sorted(os.listdir(out / "test" / "foo1" / "foo2")) == ["bar", "baz"]
    assert (out / "test" / "foo1").stat().st_mode & 0o777 == 0o700
    with pytest.raises(FileOpError, match="not found"):
        run_copy({"op": "copy", "sources": ["/test/nonexistent-file"], "dest": "/out/", "parents": True,
                  "kind": "stage"}, str(out), str(src))


def test_a_wildcard_matching_nothing_copies_nothing_and_a_missing_name_fails(tmp_path):
    """BuildKit copies with AllowEmptyWildcard; a plain missing path is an error."""
    assert _copied(tmp_path, FILES, ["dir1/*.none", "dir3/*.mp3"], "/w/") == ["w/file-301.mp3"]
    with pytest.raises(FileOpError, match="not found"):
        _copied(tmp_path, FILES, ["dir1/none.txt"], "/w/")
