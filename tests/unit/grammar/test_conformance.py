"""BuildKit's parser corpus (../shared/conformance/buildkit-parser): dumps, rejections, line info."""
from __future__ import annotations

from pathlib import Path

import pytest

import grammar
from grammar.dump import dump_buildkit

CORPUS = Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance" / "buildkit-parser"


def _cases(kind: str) -> list[Path]:
    root = CORPUS / kind
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


POSITIVE = _cases("positive")
NEGATIVE = _cases("negative")
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"conformance corpus not found at {CORPUS}")


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


@needs_corpus
@pytest.mark.parametrize("case", POSITIVE, ids=lambda p: p.name)
def test_positive_dump_matches_buildkit(case: Path) -> None:
    df = grammar.parse(_read(case / "Dockerfile"), strict=False)
    assert dump_buildkit(df) == _read(case / "result")


@needs_corpus
@pytest.mark.parametrize("case", NEGATIVE, ids=lambda p: p.name)
def test_negative_rejected(case: Path) -> None:
    for strict in (True, False):
        with pytest.raises(grammar.DockerfileSyntaxError):
            grammar.parse(_read(case / "Dockerfile"), strict=strict)


@needs_corpus
def test_corpus_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Counts the corpus as a whole, so a report shows 33/33 + 4/4 at a glance."""
    passed = sum(dump_buildkit(grammar.parse(_read(c / "Dockerfile"), strict=False)) == _read(c / "result")
                 for c in POSITIVE)
    rejected = 0
    for case in NEGATIVE:
        try:
            grammar.parse(_read(case / "Dockerfile"))
        except grammar.DockerfileSyntaxError:
            rejected += 1
    with capsys.disabled():
        print(f"\nbuildkit-parser corpus: {passed}/{len(POSITIVE)} dumps equal, "
              f"{rejected}/{len(NEGATIVE)} negatives rejected")
    assert (passed, rejected) == (len(POSITIVE), len(NEGATIVE)) == (33, 4)


@needs_corpus
def test_line_info_spans() -> None:
    df = grammar.parse(_read(CORPUS / "line-info" / "Dockerfile"))
    got = [(i.name, i.span.line, i.span.end_line) for i in df.instructions]
    assert got == [("FROM", 5, 5), ("ENV", 11, 12), ("RUN", 17, 31)]
    assert df.directive("escape") == "\\"
