"""PatternMatcher and walk beyond the conformance rows: RE2 and filepath.Match corners, the tree walk.

The MATCH_FACTS answers were recorded by running moby/patternmatcher v0.6.1 (the version BuildKit
vendors) under Go on the same pattern lists, with the package-level MatchesOrParentMatches:
"true"/"false" = the answer, "error" = matching fails, "new-error" = building the matcher fails.
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from builder.context.dockerignore import DockerignoreError, PatternMatcher, go_clean, read_patterns, walk

MATCH_FACTS = [
    (["a|b"], "a", "false"),
    (["a|b"], "ab", "false"),
    (["a|b"], "xb", "false"),
    (["a|b"], "x", "false"),
    (["a|b"], "a/c", "false"),
    (["*.{js,ts}"], "x.{js,ts}", "true"),
    (["*.{js,ts}"], "x.js", "false"),
    (["a{2}"], "aa", "false"),
    (["a{2}"], "a{2}", "true"),
    (["a{2}"], "a", "false"),
    (["a{,2}"], "a{,2}", "true"),
    (["a{,2}"], "a", "false"),
    (["a{01}"], "a{01}", "true"),
    (["a{01}"], "a", "false"),
    (["a{2,}"], "aaa", "false"),
    (["a{2,}"], "a", "false"),
    (["a{1001}"], "a", "false"),
    (["*{2}"], "x", "error"),
    (["[[:digit:]]*"], "1abc", "true"),
    (["[[:digit:]]*"], "abc", "false"),
    (["[[:digit:]]*"], "1/x", "true"),
    (["[[:foo:]]"], "f", "error"),
    (["\\d"], "5", "true"),
    (["\\d"], "d", "false"),
    (["\\x41"], "A", "true"),
    (["\\x41"], "x41", "false"),
    (["x*["], "x", "error"),
    (["x*["], "x[", "error"),
    (["x["], None, "new-error"),
    (["[z-a]"], "x", "error"),
    (["!a", "[z-a]"], "x", "error"),
    (["^a"], "a", "false"),
    (["^a"], "^a", "true"),
    (["a^"], "a^", "true"),
    (["a^"], "a", "false"),
    (["[!a]"], "!", "true"),
    (["[!a]"], "b", "false"),
    (["[!a]"], "a", "true"),
    (["[^a]"], "b", "true"),
    (["[^a]"], "a", "false"),
    (["**"], "/", "true"),
    (["**"], "x", "true"),
    (["**"], "a/b", "true"),
    (["/foo"], "foo", "false"),
    (["/foo"], "/foo", "true"),
    (["foo/"], "foo", "true"),
    (["foo/"], "foo/bar", "true"),
    (["a\\b"], "ab", "false"),
    (["a\\b"], "a b", "false"),
    (["\\é"], "é", "error"),
    (["a.b"], "a.b", "true"),
    (["a.b"], "axb", "false"),
    (["a+"], "a+", "true"),
    (["a+"], "aa", "false"),
    (["(a)"], "(a)", "true"),
    (["(a)"], "a", "false"),
    (["[a-c]x"], "bx", "true"),
    (["[a-c]x"], "dx", "false"),
    (["**/*.go"], "main.go", "true"),
    (["**/*.go"], "cmd/main.go", "true"),
    (["**/*.go"], "a/b/c.go", "true"),
    (["*.go"], "main.go", "true"),
    (["*.go"], "cmd/main.go", "false"),
    (["dir/**"], "dir", "false"),
    (["dir/**"], "dir/a", "true"),
    (["dir/**"], "dir/a/b", "true"),
    (["**file"], "file", "true"),
    (["**file"], "myfile", "true"),
    (["**file"], "a/file", "true"),
    (["a/**/b"], "a/b", "true"),
    (["a/**/b"], "a/x/b", "true"),
    (["a/**/b"], "a/x/y/b", "true"),
    (["a/**/b"], "ab", "false"),
    (["a\\*b"], "a*b", "true"),
    (["a\\*b"], "axb", "false"),
    (["\\Qa*\\E"], "a*", "false"),
    (["\\Qa*\\E"], "a[^/]*", "true"),
    (["\\Qa*\\E"], "ax", "false"),
    (["\ufeffabc"], "abc", "false"),
    (["\ufeffabc"], "\ufeffabc", "true"),
    (["[\\]]"], "]", "true"),
    (["[]a]"], None, "new-error"),
    (["a?c"], "abc", "true"),
    (["a?c"], "a/c", "false"),
    (["docs", "!docs/README.md"], "docs/README.md", "false"),
    (["docs", "!docs/README.md"], "docs/x", "true"),
    (["**", "!keep/**", "keep/drop"], "keep/a", "false"),
    (["**", "!keep/**", "keep/drop"], "keep/drop", "true"),
    (["**", "!keep/**", "keep/drop"], "keep/drop/x", "true"),
    (["**", "!keep/**", "keep/drop"], "other", "true"),
    (["a*|b"], "a", "true"),
    (["a*|b"], "axx", "true"),
    (["a*|b"], "b", "true"),
    (["a*|b"], "xb", "true"),
    (["a*|b"], "x", "false"),
    (["a*|b"], "c/b", "true"),
    (["?{2}"], "ab", "true"),
    (["?{2}"], "a", "false"),
    (["?{2}"], "abc", "false"),
    (["?{2,3}x"], "abx", "true"),
    (["?{2,3}x"], "abcx", "true"),
    (["?{2,3}x"], "ax", "false"),
    (["x?{,2}"], "xa{,2}", "true"),
    (["x?{,2}"], "xa", "false"),
    (["|*"], "x", "true"),
    (["*\\Q\\E{2}"], "x", "true"),
    (["[[:^alpha:]]?"], "1a", "true"),
    (["[[:^alpha:]]?"], "aa", "false"),
    (["\\101?"], "Ax", "true"),
    (["\\101?"], "ax", "false"),
    (["\\8?"], "x", "error"),
    (["\\bx?"], "xy", "true"),
    (["[\\d]?"], "1x", "true"),
    (["[a-]?"], None, "new-error"),
    (["a?\\z"], "ab", "true"),
    (["b\\z**/[^a]"], "b/d", "false"),
    (["b\\z**/[^a]"], "b", "false"),
    (["b\\z**/[^a]"], "bd", "false"),
    (["a\\z|b*"], "a/x", "true"),
    (["a\\z|b*"], "b/x", "true"),
    (["a\\z|b*"], "a", "true"),
]


@pytest.mark.parametrize(("patterns", "path", "answer"), MATCH_FACTS,
                         ids=[f"{i}:{'|'.join(p)}:{path}" for i, (p, path, _) in enumerate(MATCH_FACTS)])
def test_patternmatcher_fact(patterns: list[str], path: str | None, answer: str) -> None:
    if answer == "new-error":
        with pytest.raises(DockerignoreError):
            PatternMatcher(patterns)
        return
    matcher = PatternMatcher(patterns)
    if answer == "error":
        with pytest.raises(DockerignoreError):
            matcher.matches(path)
    else:
        assert matcher.matches(path) is (answer == "true")


@pytest.mark.parametrize(("path", "cleaned"), [
    ("", "."), (".", "."), ("/", "/"), ("a//b/", "a/b"), ("./a/./b", "a/b"), ("a/../..", ".."),
    ("/../a", "/a"), ("../../a/..", "../.."), ("!/../foo", "foo"),
])
def test_go_clean(path: str, cleaned: str) -> None:
    assert go_clean(path) == cleaned


@pytest.mark.parametrize(("text", "patterns"), [
    ("\ufeffa\r\nb\r\n", ["a", "b"]),
    ("  # not a comment\n#comment\n", ["# not a comment"]),
    ("/\n//x//\n!  /y/../z\n", ["/", "x", "!z"]),
    ("a\x1f\n", ["a\x1f"]),  # Go's TrimSpace keeps U+001F, str.strip would not
    ("\u3000a\u00a0\n", ["a"]),
    ("\n\n   \n", []),
])
def test_read_patterns(text: str, patterns: list[str]) -> None:
    assert read_patterns(text) == patterns


def test_exclusion_alone_is_rejected_after_cleaning() -> None:
    with pytest.raises(DockerignoreError, match="illegal exclusion"):
        PatternMatcher(["  !  "[2:3]])
    assert PatternMatcher(["", "   "]).patterns == ()


def test_could_match_inside() -> None:
    literal = PatternMatcher(["**", "!keep/this/**", "!other"])
    assert literal.could_match_inside("keep")
    assert literal.could_match_inside("keep/this")
    assert not literal.could_match_inside("kee")
    assert not literal.could_match_inside("drop")
    assert PatternMatcher(["**", "!*/keep"]).could_match_inside("anything")
    assert not PatternMatcher(["**"]).could_match_inside("anything")


def _tree(root: Path, files: list[str], dirs: list[str] = ()) -> None:
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


def _walked(root: Path, patterns: list[str] | None) -> list[str]:
    matcher = PatternMatcher(patterns) if patterns is not None else None
    return [rel + ("/" if stat.S_ISDIR(st.st_mode) else "") for rel, st in walk(root, matcher)]


def test_walk_order_is_bytewise_depth_first(tmp_path: Path) -> None:
    _tree(tmp_path, ["b", "B", "a-b", "a/x", "a.b", "é", "a/y/z"])
    assert _walked(tmp_path, None) == ["B", "a/", "a/x", "a/y/", "a/y/z", "a-b", "a.b", "b", "é"]


def test_walk_reports_parents_once_before_reincluded_children(tmp_path: Path) -> None:
    _tree(tmp_path, ["d/keep1", "d/drop", "d/sub/keep2", "d/sub/drop", "top"])
    walked = _walked(tmp_path, ["d", "!d/keep1", "!d/sub/keep2"])
    assert walked == ["d/", "d/keep1", "d/sub/", "d/sub/keep2", "top"]


def test_walk_wildcard_exception_reaches_deep(tmp_path: Path) -> None:
    _tree(tmp_path, ["x/y/a.go", "x/y/a.txt", "z.go"])
    assert _walked(tmp_path, ["**", "!**/*.go"]) == ["x/", "x/y/", "x/y/a.go", "z.go"]


def test_walk_skips_excluded_dir_without_exceptions(tmp_path: Path) -> None:
    _tree(tmp_path, ["node_modules/p/index.js", "src/app.js"])
    assert _walked(tmp_path, ["node_modules"]) == ["src/", "src/app.js"]


def test_walk_does_not_follow_symlinks(tmp_path: Path) -> None:
    _tree(tmp_path, ["real/file"])
    os.symlink("real", tmp_path / "link")
    os.symlink("/etc", tmp_path / "abs")
    walked = [(rel, stat.S_ISLNK(st.st_mode)) for rel, st in walk(tmp_path, None)]
    assert walked == [("abs", True), ("link", True), ("real", False), ("real/file", False)]


def test_walk_with_a_bad_pattern_fails_when_reached(tmp_path: Path) -> None:
    _tree(tmp_path, ["x"])
    with pytest.raises(DockerignoreError):
        list(walk(tmp_path, PatternMatcher(["x*["])))


def test_matching_speed_for_a_typical_ignore_file() -> None:
    """Not an assertion: prints how long 10,000 paths take against a realistic .dockerignore."""
    matcher = PatternMatcher(read_patterns(
        ".git\nnode_modules\n**/*.pyc\n**/__pycache__\n*.md\n!README.md\ndist/**\nbuild\n"
        ".env*\ncoverage\n**/.DS_Store\ntmp/*.log\n"))
    paths = [f"src/pkg{i % 50}/mod{i % 7}/file{i}.{('py', 'pyc', 'md', 'js')[i % 4]}" for i in range(10_000)]
    start = time.perf_counter()
    excluded = sum(matcher.matches(p) for p in paths)
    elapsed = time.perf_counter() - start
    print(f"\n10,000 paths ({excluded} excluded) matched in {elapsed * 1000:.1f} ms")
    assert excluded == 2500  # the .pyc files; `*.md` only excludes top-level files
