"""Heredoc golden cases (testdata/parser/heredoc-*/): ours against expected.json, and
expected.json against the `dockerfile` package (BuildKit v0.12's Go parser).

Regenerate a golden file after a deliberate change with:
    python -c "import tests.unit.grammar.test_heredoc as t; t.regenerate()"
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import grammar
from grammar import nodes

try:
    import dockerfile as go_dockerfile
except ImportError:  # pragma: no cover - test-only dependency
    go_dockerfile = None

CASES_ROOT = Path(__file__).resolve().parents[3] / "testdata" / "parser"
CASES = sorted(CASES_ROOT.glob("heredoc-*"))


def view(text: str) -> list[dict]:
    out = []
    for ins in grammar.parse(text).instructions:
        target = ins.trigger if isinstance(ins, nodes.Onbuild) and ins.trigger is not None else ins
        out.append({
            "instruction": ins.name, "start_line": ins.span.line, "end_line": ins.span.end_line,
            "heredocs": [{"name": h.name, "body": h.body, "expand": h.expand, "chomp": h.chomp}
                         for h in getattr(target, "heredocs", ())],
        })
    return out


def regenerate() -> None:
    for case in CASES:
        data = view((case / "Dockerfile").read_text())
        (case / "expected.json").write_text(json.dumps(data, indent=2) + "\n")


def test_cases_present() -> None:
    assert len(CASES) >= 7


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_heredoc_golden(case: Path) -> None:
    expected = json.loads((case / "expected.json").read_text())
    assert view((case / "Dockerfile").read_text()) == expected


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden_agrees_with_buildkit(case: Path) -> None:
    dockerfile = pytest.importorskip("dockerfile")
    expected = json.loads((case / "expected.json").read_text())
    commands = dockerfile.parse_string((case / "Dockerfile").read_text())
    assert [(c.cmd.upper(), c.start_line, c.end_line) for c in commands] == \
        [(e["instruction"], e["start_line"], e["end_line"]) for e in expected]
    for command, ours in zip(commands, expected):
        if command.cmd.upper() == "ONBUILD":
            continue  # the binding drops heredocs of ONBUILD triggers
        theirs = [(h.name, h.content) for h in command.heredocs]
        # BuildKit strips a <<- body's leading tabs at dispatch (ChompHeredocContent); we do it here
        mine = [(h["name"], h["body"]) for h in ours["heredocs"]]
        assert [(n, re.sub(r"(?m)^\t+", "", c) if h["chomp"] else c)
                for (n, c), h in zip(theirs, ours["heredocs"])] == mine


def test_heredoc_node_fields() -> None:
    df = grammar.parse((CASES_ROOT / "heredoc-quoted" / "Dockerfile").read_text())
    runs = [i for i in df.instructions if isinstance(i, nodes.Run)]
    assert [(h.name, h.expand) for r in runs for h in r.heredocs] == \
        [("EOF", False), ("EOF", False), ("eof", False), ("eo'f", True)]
    copy = grammar.parse("FROM x\nCOPY <<A <<B /d/\na\nA\nb\nB\n").stages[0].instructions[0]
    assert isinstance(copy, nodes.Copy)
    assert (copy.sources, copy.dest) == (("<<A", "<<B"), "/d/")
    assert [h.body for h in copy.heredocs] == ["a\n", "b\n"]


def test_crlf_heredoc_keeps_cr_like_buildkit() -> None:
    run = grammar.parse("FROM x\r\nRUN <<EOF\r\necho\r\nEOF\r\n").instructions[1]
    assert run.heredocs[0].body == "echo\r\n"


# BuildKit's heredocsFromLine lexes the whole line (flags included); a lexer error means no heredoc.
# (line, heredoc names found): checked against today's lex.go processDollar/processStopOn by hand.
LEXER_CASES = [
    ("RUN <<EOF", ["EOF"]),
    ("RUN --mount=${ -- <<EOF", []),  # `${ ` unsupported modifier, even inside a flag
    ("RUN ${ <<EOF", []),
    ("RUN ${} <<EOF", []),  # bad substitution
    ("RUN ${a <<EOF", []),  # unsupported modifier ( )
    ("RUN ${a:-x <<EOF", []),  # missing '}'
    ("RUN ${a:} <<EOF", []),  # ':' consumes the '}', so the `}` is missing
    ("RUN ${a:}} <<EOF", ["EOF"]),
    ("RUN ${a:#} <<EOF", []),  # `:#` is unsupported today
    ("RUN ${a#b} <<EOF", ["EOF"]),
    ("RUN ${a/b} <<EOF", []),  # missing '/'
    ("RUN ${a/b/c} <<EOF", ["EOF"]),
    ('RUN ${a:-"}"} <<EOF', ["EOF"]),
    ("RUN 'x <<EOF", []),  # open quote
    ('RUN "\\"" <<EOF', ["EOF"]),
    ("RUN $ <<EOF", ["EOF"]),
]


@pytest.mark.parametrize(("line", "names"), LEXER_CASES, ids=[c[0] for c in LEXER_CASES])
def test_no_heredoc_when_the_line_does_not_lex(line: str, names: list[str]) -> None:
    text = f"FROM x\n{line}\nEOF\n"
    run = grammar.parse(text, strict=False).instructions[1]
    assert [h.name for h in run.heredocs] == names
    if go_dockerfile is not None and not re.search(r"\$\{\w*:?[#%/]", line):  # v0.12 lacked #, %, /
        assert [h.name for h in go_dockerfile.parse_string(text)[1].heredocs] == names
