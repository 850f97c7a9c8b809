"""parser.py's direct path (token-type pattern + transformer callbacks) gives what lark's LALR parser gives."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import grammar
from grammar import parser
from grammar.prelex import prelex
from grammar.transform import ToNodes
from strategies import dockerfile_text

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared"
CORPUS = SHARED / "conformance" / "buildkit-parser"
FILES = (sorted(p / "Dockerfile" for kind in ("positive", "negative", "line-info") if (CORPUS / kind).is_dir()
                for p in (CORPUS / kind).iterdir() if (p / "Dockerfile").is_file())
         + sorted(p for p in (SHARED / "realworld-sample").glob("*") if "dockerfile" in p.name.lower()))

EXTRA = [
    "FROM a\nONBUILD\nONBUILD RUN x\nONBUILD ONBUILD ONBUILD COPY --from=b a b\n",
    "FROM a\nONBUILD ONBUILD ONBUILD ONBUILD ONBUILD ONBUILD RUN deep\n",  # deeper than the pattern: lark
    "FROM a\nHEALTHCHECK --interval=5s CMD [\"true\"]\nHEALTHCHECK NONE\nENV a b c\nLABEL x=1 y=2\n",
    "FROM a\nCOPY <<EOF /x\nhi\nEOF\nRUN <<A <<B\na\nA\nb\nB\n",
    "FROM a\nBOGUS x\nFROM b AS 1bad\n",
    "FROM a\nENV\nLABEL\n",
    "",
    "RUN x\n",
]


def outcome(fn, text: str, strict: bool):
    """The instructions, or the rendered error."""
    try:
        return fn(prelex(text, "Dockerfile"), strict, ToNodes())
    except grammar.DockerfileSyntaxError as exc:
        return ("error", exc.render())


def both(text: str, strict: bool) -> None:
    direct = outcome(parser.run_parser, text, strict)
    lark = outcome(parser.run_lark, text, strict)
    assert direct == lark


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_and_realworld_files(path: Path) -> None:
    text = path.read_bytes().decode("utf-8", "replace")
    for strict in (True, False):
        both(text, strict)


@pytest.mark.parametrize("text", EXTRA)
def test_nesting_and_errors(text: str) -> None:
    for strict in (True, False):
        both(text, strict)


def test_the_direct_path_is_taken() -> None:
    """The valid realworld files do not reach lark (else this file compares lark with itself)."""
    taken = [p for p in FILES if "realworld" in str(p)
             and parser._direct(prelex(p.read_text(), "Dockerfile"), True, ToNodes()) is not None]
    assert len(taken) >= 0.9 * len([p for p in FILES if "realworld" in str(p)]) > 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dockerfile_text())
def test_generated_dockerfiles(text: str) -> None:
    for strict in (True, False):
        both(text, strict)
