"""`${VAR#p}`, `${VAR%p}`, `${VAR/p/r}` without backtracking: the token NFA (grammar/shellpattern.py) gives the
answers of the regular expressions lex.go builds (checked here against Python's `re` on small inputs, where
backtracking is harmless), and a hostile pattern costs time linear in the value."""
from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from grammar.shell import ShellLex
from grammar.shellpattern import ShellPatternError, replace, trim_prefix, trim_suffix


def _regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """lex.go's convertShellPatternToRegex, as pybuild had it (the oracle)."""
    out = ["^"] if anchored else []
    i = 0
    while i < len(pattern):
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(".*" if greedy else ".*?")
        elif tok == "?":
            out.append(".")
        elif tok == "\\" and pattern.startswith(("}", "/"), i):
            continue
        elif tok == "\\":
            tok = pattern[i] if i < len(pattern) else ""
            i += 1
            if tok not in ("*", "?", "\\"):
                raise ShellPatternError(tok)
            out.append(re.escape(tok))
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out))


_PATTERN = st.lists(st.sampled_from(["*", "?", "a", "b", "\\*", "\\\\", "/", "\n"]), max_size=6).map("".join)
_VALUE = st.lists(st.sampled_from(["a", "b", "*", "\\", "/", "\n", "ab"]), max_size=10).map("".join)


@settings(max_examples=300, deadline=None)
@given(pattern=_PATTERN, value=_VALUE, greedy=st.booleans())
def test_trims_agree_with_the_regular_expressions(pattern, value, greedy):
    found = _regex(pattern, greedy, anchored=True).search(value)
    assert trim_prefix(pattern, value, greedy) == (value[found.end():] if found else value)
    reversed_found = _regex(pattern[::-1] if "\\" not in pattern else pattern, greedy, True)
    if "\\" not in pattern:
        hit = reversed_found.search(value[::-1])
        assert trim_suffix(pattern, value, greedy) == (value[::-1][hit.end():] if hit else value[::-1])[::-1]


@settings(max_examples=300, deadline=None)
@given(pattern=_PATTERN, value=_VALUE)
def test_first_replacement_agrees_with_the_regular_expression(pattern, value):
    found = _regex(pattern, True, anchored=False).search(value)
    expected = value if found is None else value[:found.start()] + "R" + value[found.end():]
    assert replace(pattern, value, "R", replace_all=False) == expected


def test_a_hostile_pattern_is_linear():
    lex = ShellLex()

    def seconds(n: int) -> float:
        # CPU time, best of five: a loaded machine delays the process (wall time) but adds little to its CPU time
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for word in ("${v##*a*a*a*a*a*a*a*a*b}", "${v%%*a*a*a*a*a*a*a*a*b}", "${v//*a*a*a*a*a*a*a*b/x}"):
                assert lex.process_word(word, {"v": "a" * n}) == "a" * n
            best = min(best, time.process_time() - started)
        return best

    seconds(10)  # warm up
    short, long = seconds(100), seconds(1000)  # the old regex took minutes at 40
    assert long < 40 * max(short, 1e-3)  # linear: 10x
