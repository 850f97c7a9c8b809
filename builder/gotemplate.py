"""The part of Go's text/template that docker's `--format` is used with: `{{.Field.Sub}}`, `{{.}}`, the functions
docker adds (`json`, `join`, `index`, `upper`, `lower`, `title`, `len`, `truncate`, `println`), `{{range .X}}…
{{end}}` and `{{if .X}}…{{else}}…{{end}}`, plus docker's own conventions: a leading `table ` prints a header and
aligns the columns, `\\t` and `\\n` in the format are a tab and a newline, and `json` alone is one JSON object
per item (docker cli/command/formatter/formatter.go). Values print as Go prints them: lists as `[a b]`, maps as
`map[k:v]`, a missing key as `<no value>`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from builder.cliparse import CommandLineError

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\S+')
NO_VALUE = "<no value>"


class TemplateError(CommandLineError):
    """A --format template pybuild cannot read or run."""


def go_string(value: Any) -> str:
    """Go's fmt %v of a JSON-like value."""
    if value is None:
        return NO_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_string(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _parse(text: str) -> list:
    """Template text → a tree: str pieces, ("expr", words), ("range"|"if", words, body, else_body)."""
    root: list = []
    stack: list[tuple[list, Any]] = [(root, None)]  # (where pieces go, the open node or None at the top)
    pos = 0
    for m in _ACTION.finditer(text):
        literal = text[pos:m.start()]
        if m.group(1):
            literal = literal.rstrip()
        stack[-1][0].append(literal)
        pos = m.end()
        words = _WORD.findall(m.group(2))
        if not words:
            raise TemplateError(f"--format: empty action {m.group(0)!r}")
        head = words[0]
        if head in ("range", "if", "with"):
            node = [head, words[1:], [], []]
            stack[-1][0].append(node)
            stack.append((node[2], node))
        elif head == "else":
            if len(stack) == 1:
                raise TemplateError("--format: {{else}} outside {{if}} or {{range}}")
            stack[-1] = (stack[-1][1][3], stack[-1][1])
        elif head == "end":
            if len(stack) == 1:
                raise TemplateError("--format: unexpected {{end}}")
            stack.pop()
        else:
            stack[-1][0].append(["expr", words])
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    if len(stack) != 1:
        raise TemplateError("--format: missing {{end}}")
    stack[0][0].append(text[pos:])
    return root


def _field(dot: Any, path: str) -> Any:
    value = dot
    for name in filter(None, path.split(".")):
        if isinstance(value, dict):
            if name not in value:
                return None
            value = value[name]
        else:
            raise TemplateError(f"--format: can't evaluate field {name} in {type(value).__name__}")
    return value


def _arg(dot: Any, word: str) -> Any:
    if word.startswith("."):
        return _field(dot, word)
    if word[0] in "\"`":
        return json.loads(word) if word[0] == '"' else word[1:-1]
    if re.fullmatch(r"-?\d+", word):
        return int(word)
    raise TemplateError(f"--format: function {word!r} not defined",
                        hint="fields are written {{.Name}}; functions: json join index upper lower title len "
                             "truncate println")


def _index(v, *keys):
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else (v[k] if isinstance(v, list) and -1 < k < len(v) else None)
    return v


FUNCS: dict[str, Callable[..., Any]] = {
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "join": lambda v, sep: sep.join(go_string(x) for x in (v or [])),
    "index": _index,
    "upper": lambda v: go_string(v).upper(),
    "lower": lambda v: go_string(v).lower(),
    "title": lambda v: go_string(v).title(),
    "len": lambda v: len(v or ()),
    "truncate": lambda v, n: go_string(v)[:n],
    "println": lambda *v: " ".join(go_string(x) for x in v) + "\n",
    "print": lambda *v: "".join(go_string(x) for x in v),
}


def _eval(dot: Any, words: list[str]) -> Any:
    if words[0] in FUNCS:
        try:
            return FUNCS[words[0]](*(_arg(dot, w) for w in words[1:]))
        except TypeError as exc:
            raise TemplateError(f"--format: wrong arguments for {words[0]}: {exc}") from None
    if len(words) != 1:
        raise TemplateError(f"--format: {words[0]!r} is not a function")
    return _arg(dot, words[0])


def _render(nodes: list, dot: Any, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "expr":
            value = _eval(dot, node[1])
            out.append(value if isinstance(value, str) else go_string(value))
        elif node[0] == "range":
            items = _eval(dot, node[1]) or []
            for item in (items.values() if isinstance(items, dict) else items):
                _render(node[2], item, out)
            if not items:
                _render(node[3], dot, out)
        else:  # if / with
            value = _eval(dot, node[1])
            if value:
                _render(node[2], value if node[0] == "with" else dot, out)
            else:
                _render(node[3], dot, out)


def prepare(fmt: str) -> tuple[bool, str]:
    """docker's pre-format: (is a table, the template with `\\t`/`\\n` made real)."""
    table = fmt.startswith("table")
    body = fmt[len("table"):] if table else fmt
    return table, body.strip(" ").replace("\\t", "\t").replace("\\n", "\n")


def format_item(fmt: str, item: Any) -> str:
    """One item through a template (`json` alone: the item as compact JSON)."""
    if fmt.strip() == "json":
        return json.dumps(item, separators=(",", ":"))
    out: list[str] = []
    _render(_parse(prepare(fmt)[1]), item, out)
    return "".join(out)


def header(template: str, names: dict[str, str]) -> str:
    """A table's header: each {{.Field}} becomes its column name (``names``, else the field upper-cased)."""
    def name(m: re.Match) -> str:
        words = _WORD.findall(m.group(2))
        field = next((w for w in reversed(words) if w.startswith(".")), "")
        return names.get(field.lstrip("."), field.lstrip(".").upper())
    return _ACTION.sub(name, template)


def render_list(fmt: str, items: list[dict], names: dict[str, str]) -> str:
    """Every item through ``fmt``, one per line; `table …` adds the header and aligns cells at tabs."""
    if fmt.strip() == "json":
        return "".join(format_item("json", i) + "\n" for i in items)
    table, body = prepare(fmt)
    tree = _parse(body)
    lines = []
    for item in items:
        out: list[str] = []
        _render(tree, item, out)
        lines.append("".join(out))
    if not table:
        return "".join(line + "\n" for line in lines)
    rows = [line.split("\t") for line in [header(body, names), *lines]]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(map(len, rows)))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in rows)
