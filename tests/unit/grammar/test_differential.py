"""grammar.parse against the `dockerfile` package (BuildKit v0.12's Go parser, wrapped).

Where v0.12 and today's BuildKit disagree, today's wins: those cases are listed in
TODAY_WINS and checked explicitly (ours = today, and v0.12 really does differ).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import grammar
from grammar.flags import split_flags
from grammar.prelex import GO_SPACE, prelex, split_command
from differential import compare, go_dockerfile
from strategies import dockerfile_text

pytestmark = pytest.mark.skipif(go_dockerfile is None, reason="the `dockerfile` package is not installed")
SAMPLE = Path(__file__).resolve().parents[3] / ".." / "shared" / "realworld-sample"
REALWORLD = sorted(p for p in SAMPLE.iterdir() if "dockerfile" in p.name.lower()) if SAMPLE.is_dir() else []

# (id, Dockerfile, what today's BuildKit gives: [(NAME, flags, raw_args)])
TODAY_WINS = [
    # split_command.go used a hard-coded backslash for flags until 2025 (commit 877d8a7): today the
    # escape directive applies to flag words too.
    ("flags-use-escape-directive", "# escape=`\nFROM x\nCOPY --chown=a`b --chmod=c\\d s /d\n",
     [("FROM", (), ("x",)), ("COPY", ("--chown=ab", "--chmod=c\\d"), ("s", "/d"))]),
    # `# check=` became a directive after v0.12, so a following `# escape=` still counts today.
    ("check-directive", "# check=skip=all\n# escape=`\nFROM x\nRUN a `\n b\n",
     [("FROM", (), ("x",)), ("RUN", (), ("a  b",))]),
    # json.Unmarshal (today) rejects trailing data that json.Decoder.Decode (v0.12) ignored:
    # the line falls back to shell form.
    ("json-with-trailing-text", 'FROM x\nCMD ["a"] b\n',
     [("FROM", (), ("x",)), ("CMD", (), ('["a"] b',))]),
    # ... and so does HEALTHCHECK CMD's command (v0.12: "arrays must be comprised of strings only").
    ("healthcheck-json-with-trailing-text", "FROM x\nHEALTHCHECK CMD [1] x\n",
     [("FROM", (), ("x",)), ("HEALTHCHECK", (), ("CMD", "[1] x"))]),
    # A flag word split by a continuation line: today's escape directive still escapes the space after it.
    ("flag-escape-across-continuation", "# escape=`\nFROM x\nCOPY --chown=a -`\n-chmod=` 1 s /d\n",
     [("FROM", (), ("x",)), ("COPY", ("--chown=a", "--chmod= 1"), ("s", "/d"))]),
    # heredocsFromLine lexes the whole line and finds no heredoc when the lexer fails. v0.12's lexer
    # failed on `${a#b}` (no #, %, / modifiers yet) and accepted `${a:#}`; today it is the reverse.
    # ... and COPY/ADD/VOLUME split the line into words instead of taking the JSON prefix.
    ("list-json-with-trailing-text", "FROM x\nADD []FROM 0\n",
     [("FROM", (), ("x",)), ("ADD", (), ("[]FROM", "0"))]),
    ("heredoc-after-trim-modifier", "FROM x\nRUN ${a#b} <<EOF\nhi\nEOF\n",
     [("FROM", (), ("x",)), ("RUN", (), ("${a#b} <<EOF",))]),
    ("no-heredoc-after-colon-hash", "FROM x\nRUN ${a:#} <<EOF\nEOF\n",
     [("FROM", (), ("x",)), ("RUN", (), ("${a:#} <<EOF",)), ("EOF", (), ("",))]),
]


@pytest.mark.parametrize("case", TODAY_WINS, ids=lambda c: c[0])
def test_today_wins_over_v012(case: tuple) -> None:
    _, text, expected = case
    df = grammar.parse(text, strict=False)
    got = [(i.name, tuple(f"--{f.name}" + (f"={f.value}" if f.value is not None else "") for f in i.flags),
            i.raw_args) for i in df.instructions]
    assert got == expected
    assert compare(text)[0] == "differ", "v0.12 agrees now: move this case out of TODAY_WINS"


@pytest.mark.parametrize("path", REALWORLD, ids=lambda p: p.name[:60])
def test_realworld_same_as_buildkit(path: Path) -> None:
    verdict, ours, theirs = compare(path.read_text(encoding="utf-8"))
    assert verdict == "same", (ours, theirs)


def test_realworld_sample_present() -> None:
    if not REALWORLD:
        pytest.skip(f"no realworld sample at {SAMPLE}")
    assert len(REALWORLD) >= 100


def _known_divergence(text: str, ours: object, theirs: object) -> bool:
    """Whether a difference is one of TODAY_WINS' kinds (flag escapes, JSON with trailing text,
    heredocs after a changed `${...}` modifier)."""
    flag_escape = _flags_depend_on_escape(text)  # start lines
    if flag_escape and isinstance(ours, Exception) != isinstance(theirs, Exception):
        return True  # a flag word swallowed (or not) the arguments: one side has none left
    if isinstance(ours, list) and isinstance(theirs, Exception) and "strings only" in str(theirs):
        # v0.12 decoded the JSON prefix of `[1] text` and failed on the number; today: shell form
        return any(v is not None and not all(isinstance(x, str) for x in v[1]) for v in map(_v012_json, ours))
    if not (isinstance(ours, list) and isinstance(theirs, list)):
        return False
    if _heredoc_divergence(text, ours, theirs):
        return True
    if len(ours) != len(theirs):
        return False
    for mine, go in zip(ours, theirs):
        if mine == go:
            continue
        if (mine[0], mine[2], mine[3]) != (go[0], go[2], go[3]):
            return False
        if not (mine[2] in flag_escape or _trailing_json(mine, go)):
            return False
    return True


def _trailing_json(mine: tuple, go: tuple) -> bool:
    """Ours (= today) kept `[...] text` as shell form or words where v0.12 took the JSON prefix."""
    v012 = _v012_json(mine)
    if v012 is None or mine[:5] != go[:5] or go[6] is False or mine[6] is True:
        return False
    head, value = v012
    list_form = (mine[1] or mine[0]) in _LIST_FORMS
    return all(isinstance(v, str) for v in value) and \
        head + tuple(_SPACES.sub(" ", v) if list_form else v for v in value) == \
        tuple(_SPACES.sub(" ", v) if list_form else v for v in go[5])


def _flags_depend_on_escape(text: str) -> set[int]:
    """The start lines of instructions whose flag words split differently with v0.12's backslash."""
    try:
        prelexed = prelex(text)
    except grammar.DockerfileSyntaxError:
        return set()
    if prelexed.escape == "\\":
        return set()
    lines = set()
    for line in prelexed.lines:
        keyword, rest, _ = split_command(line.text)
        candidates = [rest]  # the instruction's own flag words (ONBUILD's too: `ONBUILD --x=\` -- RUN`)
        if keyword.lower() == "onbuild":
            trigger = rest[split_flags(rest, prelexed.escape)[1]:].lstrip(GO_SPACE)
            candidates.append(split_command(trigger)[1])  # and the trigger's flags
        for words in candidates:
            today, old = split_flags(words, prelexed.escape), split_flags(words, "\\")
            if [w.text for w in today[0]] != [w.text for w in old[0]] or today[1] != old[1]:
                lines.add(line.start_line)
    return lines


_NEW_MODIFIER = re.compile(r"\$\{(?:[0-9]+|[@*#?$!0-]|\w*):?[#%/]")


def _heredoc_divergence(text: str, ours: list, theirs: list) -> bool:
    """Whether the first difference is a heredoc found on one side only (the rest then shifts):
    on a line whose `${...}` uses a modifier v0.12's lexer handled differently (#, %, /, :#, :%),
    or on a `[...] text` line v0.12 took for JSON form (which cannot open heredocs)."""
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    if k is None or ours[k][:3] != theirs[k][:3] or bool(ours[k][7]) == bool(theirs[k][7]):
        return False
    if ours[k][7] and theirs[k][6] is True and ours[k][6] is False and _v012_json(ours[k]) is not None:
        return True
    line = next((x.text for x in prelex(text).lines if x.start_line == ours[k][2]), "")
    return bool(_NEW_MODIFIER.search(line))


_LIST_FORMS = ("COPY", "ADD", "VOLUME")  # parseMaybeJSONToList: words when not JSON
_SPACES = re.compile(r"[\t\v\f\r ]+")  # BuildKit's reWhitespace: the word split forgets which run it was


def _v012_json(view: tuple) -> tuple[tuple[str, ...], list] | None:
    """If our (today's) non-JSON values start with a JSON array that v0.12 would have decoded:
    (the values before it, the decoded array)."""
    values = view[5] or ()
    if (view[1] or view[0]) in _LIST_FORMS:
        head, rest = (), " ".join(values)
    elif len(values) == (2 if (view[1] or view[0]) == "HEALTHCHECK" else 1):
        head, rest = values[:-1], values[-1]
    else:
        return None
    return (head, json.JSONDecoder().raw_decode(rest)[0]) if _json_prefix(rest) else None


def _json_prefix(text: str) -> bool:
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return False
    return isinstance(value, list) and end < len(text)


_RUN_A = ("RUN", None, 2, 2, (), ("a",), False, ())
# (text, ours, theirs): differences that must NOT pass as a known divergence.
NOT_KNOWN = [
    ("other-values", "FROM x\nRUN a\n", [_RUN_A], [_RUN_A[:5] + (("b",), False, ())]),
    ("json-without-trailing-text", "FROM x\nRUN [\"a\"]\n", [_RUN_A[:5] + (('["a"]',), False, ())],
     [_RUN_A[:5] + (("a",), True, ())]),
    ("trailing-json-other-values", "FROM x\nRUN [\"a\"] b\n", [_RUN_A[:5] + (('["a"] b',), False, ())],
     [_RUN_A[:5] + (("z",), True, ())]),
    ("flags-without-escape-directive", "FROM x\nRUN --a=\\ b c\n", [_RUN_A[:4] + (("--a= b",), ("c",), False, ())],
     [_RUN_A[:4] + (("--a=\\",), ("b c",), False, ())]),
    ("heredoc-without-cause", "FROM x\nRUN <<EOF\nEOF\n", [_RUN_A[:7] + ((("EOF", ""),),)],
     [_RUN_A, ("EOF", None, 3, 3, (), ("",), False, ())]),
]


@pytest.mark.parametrize("case", NOT_KNOWN, ids=lambda c: c[0])
def test_known_divergence_is_narrow(case: tuple) -> None:
    _, text, ours, theirs = case
    assert not _known_divergence(text, ours, theirs)


# derandomize: the fast test runs the same examples every time, so CI cannot go red by chance;
# the slow test below keeps exploring randomly (new findings go into the parser or TODAY_WINS).
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(dockerfile_text())
def test_generated_dockerfiles_match_buildkit(text: str) -> None:
    verdict, ours, theirs = compare(text)
    assert verdict != "differ" or _known_divergence(text, ours, theirs), (text, ours, theirs)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dockerfile_text())
def test_generated_dockerfiles_match_buildkit_many(text: str) -> None:
    verdict, ours, theirs = compare(text)
    assert verdict != "differ" or _known_divergence(text, ours, theirs), (text, ours, theirs)
