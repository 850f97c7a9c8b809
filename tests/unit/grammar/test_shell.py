"""grammar.shell beyond BuildKit's own vectors: Go-verified corner cases and a fuzz test.

FACTS were recorded by running BuildKit's frontend/dockerfile/shell/lex.go (at the pinned commit of
../shared/conformance) under Go with the same input, env and escape character: the expected value is
process_word's string, process_words' list, or {"error": <BuildKit's full message>}.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grammar.shell import ShellExpansionError, ShellLex

ENV = {"X": "banana", "E": "", "S": "a  b", "P": "/usr/local/bin", "한": "k"}

FACTS = [
    ('word', '\\', '${X//a/\\$0}', 'b\\an\\an\\a'),
    ('word', '\\', '${X//a/<\\$\\$>}', 'b<\\$\\$>n<\\$\\$>n<\\$\\$>'),
    ('word', '\\', '${X//a/\\${0}.}', 'b\\${0n\\${0n\\${0.}'),
    ('word', '\\', '${X//a/\\$1}', 'b\\n\\n\\'),
    ('word', '\\', '${X/a/\\$0}', 'b\\$0nana'),
    ('word', '\\', '${X//an/}', 'ba'),
    ('word', '\\', '${X//*/z}', 'z'),
    ('word', '\\', '${X///z}', 'zbzaznzaznzaz'),
    ('word', '\\', '${X//?/-}', '------'),
    ('word', '\\', '${P%/*}', '/usr/local'),
    ('word', '\\', '${P%%/*}', ''),
    ('word', '\\', '${P#*/}', 'usr/local/bin'),
    ('word', '\\', '${P##*/}', 'bin'),
    ('word', '\\', '${X%a\\*}', 'banana'),
    ('word', '\\', '${X#\\q}', {'error': 'failed to process "${X#\\\\q}": invalid pattern (\\q) in substitution: invalid escape \'\\q\''}),
    ('word', '\\', '${X%\\}', {'error': 'failed to process "${X%\\\\}": syntax error: missing \'}\''}),
    ('word', '`', 'a`$X', 'a$X'),
    ('word', '`', 'a\\$X', 'a\\banana'),
    ('word', '`', '"`""', '"'),
    ('word', '`', "'`'", '`'),
    ('word', '\\', '\ufeff$X', 'banana'),
    ('word', '\\', 'a\ufeff$X', 'a\ufeffbanana'),
    ('word', '\\', '${한}', 'k'),
    ('word', '\\', '$한', 'k'),
    ('word', '\\', '${X:=y}', {'error': 'failed to process "${X:=y}": unsupported modifier (:=) in substitution'}),
    ('word', '\\', '${X:#a}', {'error': 'failed to process "${X:#a}": unsupported modifier (:#) in substitution'}),
    ('word', '\\', '${X', {'error': 'failed to process "${X": unsupported modifier (�) in substitution'}),
    ('word', '\\', '${X:', {'error': 'failed to process "${X:": syntax error: missing \'}\''}),
    ('word', '\\', '${}', {'error': 'failed to process "${}": syntax error: bad substitution'}),
    ('word', '\\', '${/a/b}', ''),
    ('word', '\\', '${X/a', {'error': 'failed to process "${X/a": syntax error: missing \'/\' in ${}'}),
    ('word', '\\', '${E:?}', {'error': 'failed to process "${E:?}": E: is not allowed to be empty'}),
    ('word', '\\', '${E?}', ''),
    ('word', '\\', '${U:?need "U"\t}', {'error': 'failed to process "${U:?need \\"U\\"\\t}": U: need U\t'}),
    ('word', '\\', '$@$*$#$?$-$$$!$0', ''),
    ('word', '\\', '${X:+"q $S"}', 'q a  b'),
    ('word', '\\', '<<  EOF', '<<  EOF'),
    ('word', '\\', 'a\x00b', 'a\x00b'),
    ('words', '\\', 'pre${X:-a} b', ['banana', 'b']),
    ('words', '\\', 'pre${X} b', ['prebanana', 'b']),
    ('words', '\\', 'a <<  EOF x', ['a', '<<  EOF', 'x']),
    ('words', '\\', '$S""c', ['a', 'bc']),
    ('words', '\\', '"" x \'\'', ['x']),
    ('words', '\\', 'a\xa0b\u2003c\x1fd', ['a', 'b', 'c\x1fd']),
    ('words', '`', 'a` b c', ['a b', 'c']),
    ('words', '\\', 'x${S/ /_}y z', ['a_', 'by', 'z']),
    # an error inside a modifier word becomes "missing '}'" when the outer ${ is also unterminated
    ('word', '`', '${X+${X%\\}', {'error': 'failed to process "${X+${X%\\\\}": syntax error: missing \'}\''}),
    ('word', '\\', '${X+${X#\\q}}', {'error': 'failed to process "${X+${X#\\\\q}}": invalid pattern (\\q) in substitution: invalid escape \'\\q\''}),
    ('word', '\\', '${X+${X#\\q}', {'error': 'failed to process "${X+${X#\\\\q}": syntax error: missing \'}\''}),
]


@pytest.mark.parametrize(("op", "escape", "word", "expected"), FACTS,
                         ids=[f"{i}:{op}:{word!r}" for i, (op, _, word, _) in enumerate(FACTS)])
def test_buildkit_fact(op: str, escape: str, word: str, expected: str | list[str] | dict) -> None:
    lex = ShellLex(escape)
    run = lex.process_word if op == "word" else lex.process_words
    if isinstance(expected, dict):
        with pytest.raises(ShellExpansionError) as caught:
            run(word, ENV)
        assert str(caught.value) == expected["error"]
    else:
        assert run(word, ENV) == expected


def test_error_carries_word_and_reason() -> None:
    with pytest.raises(ShellExpansionError) as caught:
        ShellLex().process_word("${NOPE?}", {})
    assert caught.value.word == "${NOPE?}"
    assert caught.value.reason == "NOPE: is not allowed to be unset"
    assert isinstance(caught.value, ValueError)


def test_matches_include_lookups_of_unused_words() -> None:
    # BuildKit expands the modifier word before it looks at the variable, so both are recorded
    result, matched, unmatched = ShellLex().process_word_with_matches("${X-$Y}${Z:+$X}", {"X": "1"})
    assert (result, matched, unmatched) == ("1", {"X"}, {"Y", "Z"})


def test_deep_nesting_is_an_expansion_error() -> None:
    word = "${A:-" * 3000 + "x" + "}" * 3000
    with pytest.raises(ShellExpansionError, match="nested too deeply"):
        ShellLex().process_word(word, {})


_PIECES = st.sampled_from(["$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "\\", "`", "'", '"', " ", "\t",
                           "*", "a", "X", "S", "1", "@", "_", "<", "é", "\ufeff", "\x00", "[", "="])
_WORDS = st.one_of(st.text(max_size=40), st.lists(_PIECES, max_size=30).map("".join))


@settings(max_examples=400, deadline=None)
@given(word=_WORDS, escape=st.sampled_from(["\\", "`"]))
def test_fuzz_only_expansion_errors_escape(word: str, escape: str) -> None:
    lex = ShellLex(escape)
    env = {"X": "x y", "S": "", "a": "*"}
    outcomes = []
    for run in (lex.process_word, lex.process_words, lex.process_word_with_matches):
        try:
            run(word, env)
            outcomes.append(True)
        except ShellExpansionError:
            outcomes.append(False)
    assert len(set(outcomes)) == 1  # all three entry points parse the same way


@settings(max_examples=200, deadline=None)
@given(word=st.text(alphabet=st.characters(blacklist_characters="$<'\"\\`"), max_size=40))
def test_fuzz_plain_text_is_unchanged(word: str) -> None:
    assert ShellLex().process_word(word.lstrip("\ufeff"), {}) == word.lstrip("\ufeff")
