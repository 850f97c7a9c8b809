"""Rejected Dockerfiles: message, line:col and hint (like BuildKit's errors_test.go table)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grammar

# (id, Dockerfile, line, col, message contains, hint contains or None)
ERRORS = [
    ("unknown-instruction", "FROM x\n\nRUNN echo hi\n", 3, 1, 'unknown instruction "RUNN"', "did you mean RUN?"),
    ("unknown-lowercase", "FROM x\ncopyy a b\n", 2, 1, "unknown instruction", "did you mean copy?"),
    ("empty-file", "", 1, 1, "file with no instructions", None),
    ("only-comments", "# a\n\n# b\n", 3, 1, "file with no instructions", None),
    ("env-no-value", "FROM x\nENV PATH\n", 2, 5, "ENV must have two arguments", "ENV PATH=<value>"),
    ("env-missing-equals", "FROM x\nENV a=b c\n", 2, 9, "can't find = in \"c\"", "name=value"),
    ("label-missing-equals", "FROM x\nLABEL a=b c d=e\n", 2, 11, "can't find = in", None),
    ("json-not-strings", 'FROM x\nCMD [ "echo", [ "nested" ] ]\n', 2, 5, "arrays must be comprised of strings only",
     "string"),
    ("unterminated-heredoc", "FROM x\nRUN <<EOF\necho hi\n", 2, 5, "unterminated heredoc 'EOF'", "only EOF"),
    ("unknown-flag-hint", "FROM x\nCOPY --chonw=1 a b\n", 2, 6, "unknown flag: --chonw", "did you mean --chown?"),
    ("unknown-flag-list", "FROM x\nRUN --foo=1 true\n", 2, 5, "unknown flag: --foo", "RUN accepts --device"),
    ("no-flags-allowed", "FROM x\nCMD --x echo\n", 2, 5, "unknown flag: --x", "CMD takes no flags"),
    ("flag-needs-value", "FROM x\nCOPY --from a b\n", 2, 6, "missing a value on flag: --from", None),
    ("bool-flag", "FROM x\nCOPY --link=yes a b\n", 2, 6, "expecting boolean value for flag --link, not: yes", None),
    ("duplicate-flag", "FROM x\nCOPY --from=a --from=b c d\n", 2, 15, "duplicate flag specified: --from", None),
    ("network-value", "FROM x\nRUN --network=bridge true\n", 2, 5, "invalid network mode 'bridge'", "none"),
    ("healthcheck-interval", "FROM x\nHEALTHCHECK --interval=5x CMD true\n", 2, 13, "unknown unit", "duration"),
    ("healthcheck-short", "FROM x\nHEALTHCHECK --timeout=1us CMD true\n", 2, 13, "cannot be less than 1ms", None),
    ("healthcheck-retries", "FROM x\nHEALTHCHECK --retries=-1 CMD true\n", 2, 13, "cannot be negative", None),
    ("healthcheck-type", "FROM x\nHEALTHCHECK CONNECT TCP 7000\n", 2, 13, 'Unknown type "CONNECT"', "CMD"),
    ("healthcheck-none-args", "FROM x\nHEALTHCHECK NONE x\n", 2, 18, "HEALTHCHECK NONE takes no arguments", None),
    ("healthcheck-empty", "FROM x\nHEALTHCHECK CMD []\n", 2, 1, "Missing command after HEALTHCHECK CMD", None),
    ("from-arity", "FROM a b\n", 1, 1, "FROM requires either one or three arguments", "AS <name>"),
    ("stage-name", "FROM a AS 1st\n", 1, 11, 'invalid name for build stage: "1st"', None),
    ("before-from", "RUN true\nFROM x\n", 1, 1, "no build stage in current context", "only ARG"),
    ("onbuild-onbuild", "FROM x\nONBUILD ONBUILD RUN x\n", 2, 1, "Chaining ONBUILD", None),
    ("onbuild-from", "FROM x\nONBUILD FROM y\n", 2, 1, "FROM isn't allowed as an ONBUILD trigger", None),
    ("onbuild-empty", "FROM x\nONBUILD\n", 2, 1, "ONBUILD requires at least one argument", None),
    ("shell-not-json", "FROM x\nSHELL /bin/sh -c\n", 2, 7, "SHELL requires the arguments to be in JSON form", None),
    ("copy-one-arg", "FROM x\nCOPY a\n", 2, 1, "COPY requires at least two arguments", "<dest>"),
    ("copy-heredoc-dest", "FROM x\nCOPY a <<EOF\nhi\nEOF\n", 2, 1, "cannot accept a heredoc as a destination", None),
    ("workdir-empty", "FROM x\nWORKDIR\n", 2, 1, "WORKDIR requires exactly one argument", None),
    ("expose-empty", "FROM x\nEXPOSE\n", 2, 1, "EXPOSE requires at least one argument", None),
    ("volume-empty-string", 'FROM x\nVOLUME [""]\n', 2, 1, "VOLUME specified can not be an empty string", None),
    ("arg-blank-name", "ARG =x\nFROM x\n", 1, 5, "ARG names can not be blank", None),
    ("env-blank-name", "FROM x\nENV =x\n", 2, 5, "ENV names can not be blank", None),
    ("duplicate-directive", "# escape=`\n# escape=\\\nFROM x\n", 2, 1, "only one escape parser directive", None),
    ("bad-escape", "# escape=x\nFROM x\n", 1, 1, "invalid escape token 'x'", None),
    ("continued-line", "FROM x\nRUN echo \\\n  hi\nBOGUS\n", 4, 1, "unknown instruction", None),
    ("after-continuation", "FROM x\nCOPY --chown=1 \\\n  --chmd=2 a b\n", 3, 3, "unknown flag: --chmd", "--chmod"),
]


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: c[0])
def test_error_table(case: tuple) -> None:
    _, text, line, col, message, hint = case
    with pytest.raises(grammar.DockerfileSyntaxError) as info:
        grammar.parse(text)
    err = info.value
    assert (err.span.line, err.span.col) == (line, col), err.render()
    assert message in err.message
    if hint is None:
        assert err.hint is None or err.hint
    else:
        assert err.hint is not None and hint in err.hint, err.hint


def test_render_points_at_the_span() -> None:
    with pytest.raises(grammar.DockerfileSyntaxError) as info:
        grammar.parse("FROM x\n\nRUNN echo hi\n", filename="app/Dockerfile")
    assert info.value.render() == (
        'app/Dockerfile:3:1: unknown instruction "RUNN"\n'
        "   3 | RUNN echo hi\n"
        "     | ^^^^\n"
        "hint: did you mean RUN?"
    )
    assert info.value.source_line == "RUNN echo hi"


def test_parser_level_errors_are_marked() -> None:
    with pytest.raises(grammar.DockerfileSyntaxError) as info:
        grammar.parse("FROM x\nENV PATH\n", strict=False)
    assert info.value.kind == "parse"
    with pytest.raises(grammar.DockerfileSyntaxError) as info:
        grammar.parse("FROM x\nRUNN x\n")
    assert info.value.kind == "instruction"
    assert grammar.parse("FROM x\nRUNN x\n", strict=False).instructions[1].raw_args == ("",)


_ALPHABET = st.sampled_from(list("FROMRUNCOPYENVARG onbuild healthcheck\\`#=\"'[]{},<>-\t\r\n\n\n$:/.é\x00\x0b\ufeff"))


@settings(max_examples=300, deadline=None, derandomize=True)  # CI must not go red by chance
@given(st.text(alphabet=_ALPHABET, max_size=120), st.booleans())
def test_fuzz_only_syntax_errors_escape(text: str, strict: bool) -> None:
    try:
        df = grammar.parse(text, strict=strict)
    except grammar.DockerfileSyntaxError as e:
        assert e.render()
    else:
        assert df.instructions


@pytest.mark.slow
@settings(max_examples=5000, deadline=None)
@given(st.text(max_size=300), st.booleans())
def test_fuzz_unicode_only_syntax_errors_escape(text: str, strict: bool) -> None:
    try:
        grammar.parse(text, strict=strict)
    except grammar.DockerfileSyntaxError as e:
        assert e.render()
