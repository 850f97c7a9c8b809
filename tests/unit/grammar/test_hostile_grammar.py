"""Hostile Dockerfile text: deep `${a:-${b:-...}}` nesting is one short error at a fixed depth, and no error
shows more than a bounded part of a Dockerfile line (cut with "…", the caret still under its span)."""
from __future__ import annotations

import pytest

import grammar
from grammar import nodes
from grammar.errors import ELLIPSIS, MAX_LINE, DockerfileSyntaxError
from grammar.shell import MAX_NESTING, ShellExpansionError, ShellLex


@pytest.mark.parametrize("word", [
    "${a:-" * 5000 + "x" + "}" * 5000,  # closed
    "${a:-" * 5000,  # unterminated
    "${a#" * 5000 + "x" + "}" * 5000,
    '"${a:-' * 5000,
])
def test_deep_nesting_is_one_short_error(word):
    with pytest.raises(ShellExpansionError) as err:
        ShellLex().process_words(word, {"a": ""})
    assert f"more than {MAX_NESTING} levels" in str(err.value) or "nested too deeply" in str(err.value)
    assert len(str(err.value)) < 300  # was the whole word: 30 kB


def test_nesting_up_to_the_bound_works():
    depth = MAX_NESTING - 1
    assert ShellLex().process_word("${a:-" * depth + "x" + "}" * depth, {}) == "x"


def test_a_long_line_is_cut_around_the_span():
    line = "RUN " + "x" * 5000 + " BAD " + "y" * 5000
    col = line.index("BAD") + 1
    err = DockerfileSyntaxError(nodes.Span("Dockerfile", 2, col, 2, col + 2), "bad thing " * 1000, source_line=line)
    shown = err.render().splitlines()
    assert all(len(text) < MAX_LINE + 520 for text in shown)
    source, carets = shown[1], shown[2]
    assert source.count(ELLIPSIS) == 2 and shown[0].endswith(ELLIPSIS)
    at = carets.index("^")
    assert source[at:at + 3] == "BAD" and carets.count("^") == 3


def test_a_long_unknown_instruction_line_is_cut():
    with pytest.raises(DockerfileSyntaxError) as err:
        grammar.parse("FROM scratch\nFOO " + "x" * 20000 + "\n", filename="Dockerfile")
    assert len(err.value.render()) < 2 * MAX_LINE + 200 and ELLIPSIS in err.value.render()


def test_an_error_cannot_send_escape_sequences_to_the_terminal():
    with pytest.raises(DockerfileSyntaxError) as err:
        grammar.parse("FROM scratch\nFOO \x1b]0;owned\x07 \x1b[2J\n", filename="Dockerfile")
    shown = err.value.render()
    assert "\x1b" not in shown and "\x07" not in shown and "?]0;owned?" in shown
