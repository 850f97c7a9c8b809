"""BuildKit's own shell-word vectors (../shared/conformance/buildkit-shell, README §2) against grammar.shell."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from grammar.shell import ShellExpansionError, ShellLex

SHELL_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance" / "buildkit-shell"
ENVVAR_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _need(name: str) -> Path:
    path = SHELL_DIR / name
    if not path.is_file():
        pytest.skip(f"conformance data {path} is absent (shared test data not mounted)")
    return path


def _envvar_vectors() -> list[tuple[int, str, str]]:
    """(line number, input, expected) of the A and U lines; W lines are Windows-only."""
    path = SHELL_DIR / "envVarTest"
    if not path.is_file():
        return []
    out = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if raw.startswith("#") or not raw.strip():
            continue
        platform, given, expected = (field.strip() for field in raw.strip().split("|"))
        if platform in ("A", "U"):
            out.append((number, given, expected))
    return out


def _words_vectors() -> list[tuple[int, dict[str, str], str, list[str] | None]]:
    """(line number, env so far, input, expected words or None for an error)."""
    path = SHELL_DIR / "wordsTest"
    if not path.is_file():
        return []
    env: dict[str, str] = {}
    out = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not raw or raw.startswith("#"):
            continue
        if raw.startswith("ENV "):
            name, _, value = raw[4:].lstrip(" ").partition("=")
            env[name] = value
            continue
        given, expected = raw.split("|")
        words = expected.lstrip(" ")
        out.append((number, dict(env), given.strip(), None if words == "error" else words.split(",")))
    return out


def _expansion_rows() -> list[dict]:
    path = SHELL_DIR / "expansion.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


ENVVAR = _envvar_vectors()
WORDS = _words_vectors()
EXPANSION = _expansion_rows()


def test_vector_counts() -> None:
    _need("envVarTest")
    _need("wordsTest")
    _need("expansion.json")
    assert (len(ENVVAR), len(WORDS), len(EXPANSION)) == (228, 24, 56)


@pytest.mark.parametrize(("line", "given", "expected"), ENVVAR, ids=[f"line{v[0]}" for v in ENVVAR])
def test_envvar(line: int, given: str, expected: str) -> None:
    lex = ShellLex("\\")
    if expected == "error":
        with pytest.raises(ShellExpansionError):
            lex.process_word(given, ENVVAR_ENV)
    else:
        assert lex.process_word(given, ENVVAR_ENV) == expected


@pytest.mark.parametrize(("line", "env", "given", "expected"), WORDS, ids=[f"line{v[0]}" for v in WORDS])
def test_words(line: int, env: dict[str, str], given: str, expected: list[str] | None) -> None:
    lex = ShellLex("\\")
    if expected is None:
        with pytest.raises(ShellExpansionError):
            lex.process_words(given, env)
    else:
        assert lex.process_words(given, env) == expected


@pytest.mark.parametrize("row", EXPANSION, ids=[f"{i}:{r['input']}" for i, r in enumerate(EXPANSION)])
def test_expansion(row: dict) -> None:
    lex = ShellLex("\\")
    if row["error"]:
        with pytest.raises(ShellExpansionError) as caught:
            lex.process_word_with_matches(row["input"], row["env"])
        assert row.get("error_contains", "") in str(caught.value)
        return
    result, matched, unmatched = lex.process_word_with_matches(row["input"], row["env"])
    assert result == row["expected"]
    if "matched" in row:
        assert matched == set(row["matched"])
        assert unmatched == set(row["unmatched"])
