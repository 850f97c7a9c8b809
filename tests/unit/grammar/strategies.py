"""Hypothesis strategies that write Dockerfiles: instructions, flags, JSON and shell forms,
key=value pairs, continuations (with comments and blank lines inside), heredocs, directives."""
from __future__ import annotations

import json

from hypothesis import strategies as st

KEYWORDS = ["FROM", "RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME", "ENV", "LABEL", "ARG",
            "EXPOSE", "USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER", "HEALTHCHECK", "ONBUILD"]
FLAG_NAMES = ["mount", "network", "from", "chown", "chmod", "link", "platform", "interval", "retries",
              "exclude", "parents", "bogus"]

_CHARS = "abcxyz019-_./:$@{}=,[]<>#\"' \\`é\t"
word = st.text(alphabet="abcxyz019-_./:$@{}", min_size=1, max_size=6)
messy = st.text(alphabet=_CHARS, min_size=0, max_size=10)
spaces = st.sampled_from([" ", " ", "  ", "\t", " \t "])


@st.composite
def keyword(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(KEYWORDS + ["RUNN", "FOO"]))
    return draw(st.sampled_from([name, name.lower(), name.capitalize()]))


@st.composite
def flag(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(FLAG_NAMES))
    value = draw(st.one_of(st.none(), word, messy.filter(lambda s: " " not in s and "\t" not in s)))
    return f"--{name}" if value is None else f"--{name}={value}"


@st.composite
def json_array(draw: st.DrawFn) -> str:
    items = draw(st.lists(st.one_of(word, messy), max_size=3))
    text = json.dumps(items, ensure_ascii=draw(st.booleans()))
    mutation = draw(st.sampled_from(["", "", "", "number", "nested", "unclosed", "single"]))
    if mutation == "number":
        text = text[:-1] + (", 1]" if items else "1]")
    elif mutation == "nested":
        text = "[[" + text[1:] + "]"
    elif mutation == "unclosed":
        text = text[:-1]
    elif mutation == "single":
        text = text.replace('"', "'")
    return text


@st.composite
def heredoc(draw: st.DrawFn) -> tuple[str, str]:
    """(the `<<` word, the body lines + terminator)."""
    name = draw(st.sampled_from(["EOF", "END", "file.txt", "X"]))
    dash = draw(st.sampled_from(["", "-"]))
    quote = draw(st.sampled_from(["", "'", '"']))
    body = draw(st.lists(st.one_of(messy, st.just(f"\t{name}x"), st.just("# not a comment")), max_size=3))
    indent = "\t" if dash and draw(st.booleans()) else ""
    lines = [("\t" + b if dash and draw(st.booleans()) else b) for b in body]
    return f"{dash}<<{quote}{name}{quote}", "".join(line + "\n" for line in lines) + indent + name + "\n"


@st.composite
def arguments(draw: st.DrawFn) -> tuple[str, list[str]]:
    """An argument text and the heredoc bodies it opens."""
    kind = draw(st.sampled_from(["words", "words", "json", "kv", "legacy", "heredoc", "messy", "empty"]))
    if kind == "json":
        return draw(json_array()), []
    if kind == "kv":
        pairs = draw(st.lists(st.tuples(word, st.one_of(word, messy.map(lambda s: f'"{s}"'))), min_size=1,
                              max_size=3))
        return draw(spaces).join(f"{k}={v}" for k, v in pairs), []
    if kind == "legacy":
        return f"{draw(word)}{draw(spaces)}{draw(messy)}", []
    if kind == "heredoc":
        docs = draw(st.lists(heredoc(), min_size=1, max_size=2))
        tail = draw(st.sampled_from(["", " /dest", " | sh"]))
        return " ".join(d[0] for d in docs) + tail, [d[1] for d in docs]
    if kind == "messy":
        return draw(messy), []
    if kind == "empty":
        return "", []
    return draw(spaces).join(draw(st.lists(word, min_size=1, max_size=4))), []


@st.composite
def instruction(draw: st.DrawFn, escape: str) -> str:
    key = draw(keyword())
    flags = draw(st.lists(flag(), max_size=2))
    if flags and draw(st.integers(0, 5)) == 0:
        flags.append("--")
    args, bodies = draw(arguments())
    if key.upper() == "ONBUILD" and draw(st.booleans()):
        args = f"{draw(st.sampled_from(['RUN', 'COPY', 'ENV', 'ONBUILD']))} {args}"
    if key.upper() == "HEALTHCHECK" and draw(st.booleans()):
        args = f"{draw(st.sampled_from(['CMD', 'NONE', 'cmd']))} {args}"
    parts = [key] + flags + ([args] if args else [])
    line = draw(st.sampled_from(["", " ", "\t"])) + " ".join(parts) + draw(st.sampled_from(["", "", " "]))
    return _continue(draw, line, escape) + "\n" + "".join(bodies)


def _continue(draw: st.DrawFn, line: str, escape: str) -> str:
    """Break `line` at some spaces into continuation lines, maybe with comments/blank lines between."""
    cuts = sorted(set(draw(st.lists(st.integers(0, max(len(line), 1)), max_size=2))))
    out, prev = [], 0
    for cut in cuts:
        if 0 < cut < len(line) and line[cut - 1] != escape:
            out.append(line[prev:cut])
            prev = cut
    out.append(line[prev:])
    glue = []
    for i, piece in enumerate(out[:-1]):
        extra = draw(st.sampled_from(["", "", "# comment\n", "\n", "  \n", f"  # c {escape}\n"]))
        trail = draw(st.sampled_from(["", "", " ", "\t"]))
        glue.append(piece + escape + trail + "\n" + extra)
    return "".join(glue) + out[-1]


@st.composite
def dockerfile_text(draw: st.DrawFn) -> str:
    escape = draw(st.sampled_from(["\\", "\\", "`"]))
    head = []
    if escape == "`" or draw(st.booleans()):
        head.append(f"# escape={escape}\n")
    if draw(st.booleans()):
        head.insert(draw(st.integers(0, len(head))), "# syntax=docker/dockerfile:1\n")
    body = ["FROM base\n"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 5))):
        body.append(draw(st.one_of(instruction(escape), instruction(escape),
                                   st.sampled_from(["\n", "# note\n", "  \n", f"# ends in {escape}\n"]))))
    text = "".join(head + body)
    if draw(st.integers(0, 6)) == 0:
        text = text.replace("\n", "\r\n")
    if draw(st.integers(0, 6)) == 0:
        text = text.rstrip("\n")
    return text
