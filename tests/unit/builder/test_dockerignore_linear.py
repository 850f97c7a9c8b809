""".dockerignore matching in linear time: the non-backtracking matcher (builder/context/linmatch.py) agrees with
Python's `re` on what patternmatcher's expressions match, and hostile patterns (`**/**/**/**/**/**/**/*x`,
`*a*a*a*...b`) cost time proportional to the path, where `re` took seconds to minutes a path."""
from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.context.dockerignore import PatternMatcher, _compile
from builder.context.goglob import re2_to_python
from builder.context.linmatch import LinearPattern, compile_pattern

_PATTERN_PIECES = st.sampled_from(["**", "*", "?", "/", "a", "b", ".", "[ab]", "[^a]", "\\*", "x", "{2}", "|",
                                   "[[:digit:]]", "\\d", "\\b", "1"])
_PATH_PIECES = st.sampled_from(["a", "b", "/", ".", "x", "1", "ab", "*", " "])


@pytest.mark.slow  # seconds: kept out of the fast set's minute
@settings(max_examples=600, deadline=None)
@given(pattern=st.lists(_PATTERN_PIECES, min_size=1, max_size=8).map("".join),
       path=st.lists(_PATH_PIECES, max_size=12).map("".join))
def test_the_linear_matcher_agrees_with_re(pattern, path):
    compiled = _compile(pattern, False)
    if compiled.kind != "regexp" or compiled.regex is None:
        return
    expr = compiled.regex.pattern
    for python_expr in (expr, expr.replace(r"(?:\Z)", r"(?=/|\Z)")):
        try:
            expected = re.search(python_expr, path, re.ASCII) is not None
        except re.error:
            continue
        assert (LinearPattern(python_expr).search(path) is not None) == expected, (pattern, python_expr, path)


def test_simple_patterns_keep_re_and_ambiguous_ones_do_not():
    assert isinstance(compile_pattern(re2_to_python(r"^[^/]*\.log$")), re.Pattern)
    assert isinstance(compile_pattern(re2_to_python(r"^(.*/)?[^/]*\.pyc$")), LinearPattern)


def _seconds(matcher: PatternMatcher, path: str) -> float:
    """The best of five CPU timings of three matches (a loaded machine delays the process, adding wall time)."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(3):
            matcher.matches(path)
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize("pattern, unit", [
    ("**/**/**/**/**/**/**/*x", "a/"),  # 2.3 s a path of 30 components with re
    ("*a*a*a*a*a*a*a*a*a*a*b", "a"),  # 44 s on 40 characters with re
    ("**/a/**/a/**/a/**/a/**/a/**/b", "a/"),
])
def test_hostile_patterns_match_in_linear_time(pattern, unit):
    matcher = PatternMatcher([pattern])
    short, long = unit * 20 + "y", unit * 200 + "y"
    assert matcher.matches(short) is False and matcher.matches(long) is False
    assert _seconds(matcher, long) < 40 * max(_seconds(matcher, short), 1e-3)  # linear: 10x
