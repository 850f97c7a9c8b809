"""patternmatcher / fsutil / BuildKit .dockerignore facts (../shared/conformance, README §3)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.context.dockerignore import DockerignoreError, MatchInfo, PatternMatcher, read_patterns, walk

CONFORMANCE = Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance"


def _rows(name: str) -> list[dict]:
    path = CONFORMANCE / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


MATCH_ROWS = _rows("dockerignore.json")
FILE_ROWS = _rows("dockerignore-file.json")
WALK_ROWS = _rows("dockerignore-walk.json")


def _ids(rows: list[dict], key: str) -> list[str]:
    return [f"{i}:{row.get('source', '')}:{row.get(key, '')}" for i, row in enumerate(rows)]


def test_row_counts() -> None:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"conformance data {CONFORMANCE} is absent (shared test data not mounted)")
    assert (len(MATCH_ROWS), len(FILE_ROWS), len(WALK_ROWS)) == (145, 1, 5)


def _top_down(matcher: PatternMatcher, path: str) -> bool:
    """Ask about every ancestor first and hand its MatchInfo down, as a tree walk does."""
    info: MatchInfo | None = None
    parts = path.split("/")
    result = False
    for depth in range(1, len(parts) + 1):
        result, info = matcher.matches_with_parents("/".join(parts[:depth]), info)
    return result


@pytest.mark.parametrize("row", MATCH_ROWS, ids=_ids(MATCH_ROWS, "path"))
def test_match(row: dict) -> None:
    patterns = row["patterns"]
    if row["api"] == "build-context":
        patterns = read_patterns("\n".join(patterns) + "\n")
    if row["error"]:
        with pytest.raises(DockerignoreError):
            PatternMatcher(patterns).matches(row["path"])
        return
    matcher = PatternMatcher(patterns)
    assert matcher.matches(row["path"]) is row["match"]
    if row["source"] == "TestMatches":
        # upstream asserts the same answer through the incremental entry points
        assert _top_down(matcher, row["path"]) is row["match"]
        assert matcher.matches_with_parents(row["path"])[0] is row["match"]


def test_malformed_pattern_fails_on_every_call() -> None:
    matcher = PatternMatcher(["[Local-Only]/"])
    for _ in range(2):
        with pytest.raises(DockerignoreError):
            matcher.matches("x")


@pytest.mark.parametrize("row", FILE_ROWS, ids=_ids(FILE_ROWS, "note"))
def test_read_file(row: dict) -> None:
    assert read_patterns(row["content"]) == row["patterns"]
    assert read_patterns("") == []


def _make_tree(root: Path, tree: list[list[str]]) -> None:
    for kind, rel in tree:
        path = root / rel
        if kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rel)


def _kind(st) -> str:
    import stat

    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


@pytest.mark.parametrize("row", WALK_ROWS, ids=_ids(WALK_ROWS, "exclude_patterns"))
def test_walk(row: dict, tmp_path: Path) -> None:
    _make_tree(tmp_path, row["tree"])
    if row["error"]:
        with pytest.raises(DockerignoreError):
            PatternMatcher(row["exclude_patterns"])
        return
    matcher = PatternMatcher(row["exclude_patterns"])
    walked = [[_kind(st), rel] for rel, st in walk(tmp_path, matcher)]
    if "walk" in row:
        assert walked == row["walk"]
    for rel, can_open in row.get("open", {}).items():
        assert (not matcher.matches(rel)) is can_open


def test_build_context_rows_through_walk(tmp_path: Path) -> None:
    """BuildKit's testDockerignore: which files `COPY . .` receives, via the real walk."""
    rows = [r for r in MATCH_ROWS if r["api"] == "build-context" and not r["error"]]
    if not rows:
        pytest.skip("conformance data is absent")
    patterns = rows[0]["patterns"]
    for row in rows:
        (tmp_path / row["path"]).write_text("x")
    (tmp_path / ".dockerignore").write_text("\n".join(patterns) + "\n")
    matcher = PatternMatcher(read_patterns((tmp_path / ".dockerignore").read_text()))
    sent = {rel for rel, _ in walk(tmp_path, matcher)}
    for row in rows:
        assert (row["path"] not in sent) is row["match"], row["path"]
