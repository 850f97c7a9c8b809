"""A non-backtracking matcher for the expressions `goglob.re2_to_python` writes, so a .dockerignore pattern is
matched in time linear in the path, as Go's RE2-based regexp does it (Python's `re` backtracks: the 23-byte
`**/**/**/**/**/**/**/*x` took seconds a path, `*a*a*a*a*a*a*a*a*a*a*b` 44 s on 40 characters).

The expression is compiled to a Thompson NFA and run as a lazily built DFA: each set of NFA states met is a DFA
state whose transitions are cached per (context, character), the context being the few facts the assertions
need (start of text, end of text or before `/`, word characters on either side). A search visits each path
character once; the cache is dropped when it grows past MAX_CACHE, as RE2 does with its DFA.

Only the subset re2_to_python produces is read: `(?:...)`, `|`, `*`, `?`, `{n}`, `{n,}`, `{n,m}`, classes of
`\\Uxxxxxxxx` ranges (or `\\x00`), `.`, escaped literals, `(?:^)`, `(?:\\A)`, `(?:\\b)`, `(?:\\B)`, `(?:\\Z)` and
`(?=/|\\Z)`; `search` has `re.search`'s meaning with re.ASCII (a match anywhere).
"""
from __future__ import annotations

import bisect

from builder.context.goglob import MAX_RUNE, complement

MAX_STATES = 50_000  # NFA states; `x{1000}` is 1000
MAX_CACHE = 10_000  # DFA states (and closures) kept before the cache is dropped
_CHAR, _SPLIT, _ASSERT, _MATCH = range(4)
_BOT, _EOT, _EOT_OR_SLASH, _WORD, _NOT_WORD = range(5)
_ASSERTIONS = {"(?:^)": _BOT, "(?:\\A)": _BOT, "(?:\\Z)": _EOT, "(?=/|\\Z)": _EOT_OR_SLASH,
               "(?:\\b)": _WORD, "(?:\\B)": _NOT_WORD}


class TooComplex(ValueError):
    """The expression needs more than MAX_STATES NFA states."""


class _Parser:
    """Python-syntax text → AST: ("chars", lows, highs) | ("assert", kind) | ("cat", [..]) | ("alt", [..])
    | ("rep", node, min, max or None)."""

    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0

    def parse(self):
        node = self._alt()
        if self.i != len(self.text):
            raise ValueError(f"unexpected {self.text[self.i]!r} at {self.i}")
        return node

    def _alt(self):
        branches = [self._cat()]
        while self.text.startswith("|", self.i):
            self.i += 1
            branches.append(self._cat())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def _cat(self):
        items = []
        while self.i < len(self.text) and self.text[self.i] not in "|)":
            items.append(self._repeat(self._atom()))
        return ("cat", items)

    def _atom(self):
        text, i = self.text, self.i
        for form, kind in _ASSERTIONS.items():
            if text.startswith(form, i):
                self.i += len(form)
                return ("assert", kind)
        if text.startswith("(?:", i):
            self.i += 3
            node = self._alt()
            self._expect(")")
            return node
        ch = text[i]
        if ch == "[":
            return self._class()
        if ch == ".":
            self.i += 1
            return _ranges([(0, 9), (11, MAX_RUNE)])
        if ch == "\\":
            self.i += 2
            return _ranges([(ord(text[i + 1]),) * 2])
        self.i += 1
        return _ranges([(ord(ch),) * 2])

    def _repeat(self, node):
        text = self.text
        while self.i < len(text) and text[self.i] in "*?{":
            ch = text[self.i]
            if ch == "{":
                end = text.index("}", self.i)
                low, comma, high = text[self.i + 1:end].partition(",")
                node = ("rep", node, int(low), (int(high) if high else None) if comma else int(low))
                self.i = end + 1
            else:
                node = ("rep", node, 0, None if ch == "*" else 1)
                self.i += 1
        return node

    def _class(self):
        self.i += 1
        negate = self.text.startswith("^", self.i)
        self.i += negate
        pairs = []
        while self.text[self.i] != "]":
            lo = self._class_char()
            hi = lo
            if self.text[self.i] == "-":
                self.i += 1
                hi = self._class_char()
            pairs.append((lo, hi))
        self.i += 1
        return _ranges(complement(pairs) if negate else pairs)

    def _class_char(self) -> int:
        text, i = self.text, self.i
        if text.startswith("\\U", i):
            self.i += 10
            return int(text[i + 2:i + 10], 16)
        if text.startswith("\\x", i):
            self.i += 4
            return int(text[i + 2:i + 4], 16)
        if text[i] == "\\":
            self.i += 2
            return ord(text[i + 1])
        self.i += 1
        return ord(text[i])

    def _expect(self, ch: str) -> None:
        if not self.text.startswith(ch, self.i):
            raise ValueError(f"expected {ch!r} at {self.i}")
        self.i += 1


def _ranges(pairs: list[tuple[int, int]]):
    merged: list[list[int]] = []
    for lo, hi in sorted(pairs):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return ("chars", tuple(lo for lo, _ in merged), tuple(hi for _, hi in merged))


class _Builder:
    """AST → NFA: states are [kind, arg, out1, out2]; `build` returns (start, out-list) fragments."""

    def __init__(self) -> None:
        self.states: list[list] = []

    def new(self, kind: int, arg=None) -> int:
        if len(self.states) >= MAX_STATES:
            raise TooComplex(f"the pattern needs more than {MAX_STATES} matcher states")
        self.states.append([kind, arg, None, None])
        return len(self.states) - 1

    def build(self, node) -> tuple[int, list[tuple[int, int]]]:
        """(entry state, dangling exits as (state, slot))."""
        kind = node[0]
        if kind in ("chars", "assert"):
            s = self.new(_CHAR if kind == "chars" else _ASSERT, node[1:] if kind == "chars" else node[1])
            return s, [(s, 2)]
        if kind == "alt":
            parts = [self.build(b) for b in node[1]]
            entry, exits = parts[-1]
            for start, outs in reversed(parts[:-1]):
                split = self.new(_SPLIT)
                self.states[split][2], self.states[split][3] = start, entry
                entry, exits = split, outs + exits
            return entry, exits
        if kind == "cat":
            if not node[1]:
                s = self.new(_SPLIT)  # an empty sequence: a pass-through (slot 3 stays None)
                return s, [(s, 2)]
            entry, exits = self.build(node[1][0])
            for item in node[1][1:]:
                start, outs = self.build(item)
                self._patch(exits, start)
                exits = outs
            return entry, exits
        return self._repeat(node[1], node[2], node[3])

    def _repeat(self, node, low: int, high: int | None):
        pieces = [self.build(node) for _ in range(low)]
        if high is None:
            start, outs = self.build(node)
            split = self.new(_SPLIT)
            self.states[split][2] = start
            self._patch(outs, split)
            pieces.append((split, [(split, 3)]))
        else:
            for _ in range(high - low):
                start, outs = self.build(node)
                split = self.new(_SPLIT)
                self.states[split][2] = start
                pieces.append((split, outs + [(split, 3)]))
        if not pieces:
            return self.build(("cat", []))
        entry, exits = pieces[0]
        for start, outs in pieces[1:]:
            self._patch(exits, start)
            exits = outs
        return entry, exits

    def _patch(self, exits, target: int) -> None:
        for state, slot in exits:
            self.states[state][slot] = target


def _is_word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def compile_pattern(python_expr: str):
    """Python's `re` when it cannot backtract super-linearly (no alternation and at most one variable-length
    repetition: `*.log`), else a LinearPattern (`**/*.pyc`, `*a*b`); both answer `search`."""
    tree = _Parser(python_expr).parse()
    if _alternations(tree) == 0 and _variable_repeats(tree) <= 1:
        import re  # lazy: saves ~8 ms at start-up

        return re.compile(python_expr, re.ASCII)
    return LinearPattern(python_expr)


def _children(node) -> list:
    if node[0] in ("cat", "alt"):
        return node[1]
    return [node[1]] if node[0] == "rep" else []


def _alternations(node) -> int:
    return (node[0] == "alt") + sum(_alternations(c) for c in _children(node))


def _variable_repeats(node) -> int:
    here = node[0] == "rep" and node[2] != node[3]
    inside = sum(_variable_repeats(c) for c in _children(node))
    return here + (inside * (node[3] or 2) if node[0] == "rep" else inside)


def _required_literals(node) -> tuple[str, ...]:
    """Literal runs every match contains (the top-level sequence's single characters): a text without one of
    them cannot match, which a C-level `in` tells at once."""
    if node[0] != "cat":
        return ()
    runs, run = [], []
    for item in node[1]:
        if item[0] == "chars" and len(item[1]) == 1 and item[1][0] == item[2][0]:
            run.append(chr(item[1][0]))
            continue
        if item[0] != "assert":
            runs.append("".join(run))
            run = []
    runs.append("".join(run))
    return tuple(r for r in runs if r)


class LinearPattern:
    """A compiled expression; `search(text)` is True when it matches somewhere in ``text`` (else None)."""

    def __init__(self, python_expr: str) -> None:
        self.pattern = python_expr
        builder = _Builder()
        tree = _Parser(python_expr).parse()
        start, exits = builder.build(tree)
        match = builder.new(_MATCH)
        builder._patch(exits, match)
        self._states = builder.states
        self._required = _required_literals(tree)
        self._words = any(s[0] == _ASSERT and s[1] in (_WORD, _NOT_WORD) for s in builder.states)
        self._closures: dict = {}
        self._ids: dict[frozenset, int] = {}
        self._sets: list[frozenset] = []
        self._rows: list[dict[str, int]] = []  # DFA state id → {char: next id, or -1 for "matched here"}
        self._start = self._id(frozenset([start]))

    def search(self, text: str) -> bool | None:
        for literal in self._required:
            if literal not in text:
                return None
        if len(self._sets) > MAX_CACHE:
            self._reset()
        n = len(text)
        if n == 0 or self._words:
            return self._search_slow(text)
        d = self._advance(self._start, text, 0)  # position 0 is the only one where `^` holds
        rows = self._rows
        for i in range(1, n):
            if d < 0:
                return True
            nxt = rows[d].get(text[i])
            if nxt is None:
                nxt = self._advance(d, text, i)
            d = nxt
        if d < 0:
            return True
        return True if self._closure(self._sets[d], (n == 0, True, False, False, False))[0] else None

    def _advance(self, d: int, text: str, i: int) -> int:
        """From DFA state ``d`` at position ``i`` (0 < i < len): -1 when a match ends here, else the state after
        text[i]; cached in the row of ``d`` for the middle positions (their context depends on text[i] alone)."""
        ch = text[i]
        matched, chars = self._closure(self._sets[d], (i == 0, False, ch == "/", False, False))
        nxt = -1 if matched else self._id(self._step(chars, ch))
        if i > 0:
            self._rows[d][ch] = nxt
        return nxt

    def _reset(self) -> None:
        """Drop the cached DFA (between searches: one search adds at most len(text) + 1 states)."""
        start = self._sets[self._start]
        self._closures.clear()
        self._ids.clear()
        self._sets.clear()
        self._rows.clear()
        self._start = self._id(start)

    def _id(self, states: frozenset) -> int:
        found = self._ids.get(states)
        if found is None:
            found = self._ids[states] = len(self._sets)
            self._sets.append(states)
            self._rows.append({})
        return found

    def _search_slow(self, text: str) -> bool | None:
        """The same search with the full context per position (for `\\b`/`\\B` and the empty text)."""
        dstate, n = self._sets[self._start], len(text)
        for i in range(n + 1):
            nxt = text[i] if i < n else ""
            ctx = (i == 0, i == n, nxt == "/", i > 0 and _is_word(text[i - 1]), bool(nxt) and _is_word(nxt))
            matched, chars = self._closure(dstate, ctx)
            if matched:
                return True
            if i == n:
                return None
            dstate = self._step(chars, nxt)
        return None

    def _closure(self, dstate: frozenset, ctx: tuple) -> tuple[bool, tuple[int, ...]]:
        key = (dstate, ctx)
        found = self._closures.get(key)
        if found is None:
            if len(self._closures) > MAX_CACHE:
                self._closures.clear()
            found = self._closures[key] = self._compute_closure(dstate, ctx)
        return found

    def _compute_closure(self, dstate: frozenset, ctx: tuple) -> tuple[bool, tuple[int, ...]]:
        at_start, at_end, before_slash, prev_word, next_word = ctx
        holds = {_BOT: at_start, _EOT: at_end, _EOT_OR_SLASH: at_end or before_slash,
                 _WORD: prev_word != next_word, _NOT_WORD: prev_word == next_word}
        seen, stack, chars, matched = set(), list(dstate), [], False
        while stack:
            s = stack.pop()
            if s is None or s in seen:
                continue
            seen.add(s)
            kind, arg, out1, out2 = self._states[s]
            if kind == _CHAR:
                chars.append(s)
            elif kind == _MATCH:
                matched = True
            elif kind == _SPLIT:
                stack.extend((out2, out1))
            elif holds[arg]:
                stack.append(out1)
        return matched, tuple(sorted(chars))

    def _step(self, chars: tuple[int, ...], ch: str) -> frozenset:
        code = ord(ch)
        nxt = set(self._sets[self._start])  # search: a match may begin at every position
        for s in chars:
            _, (lows, highs), out, _ = self._states[s]
            k = bisect.bisect_right(lows, code) - 1
            if k >= 0 and code <= highs[k]:
                nxt.add(out)
        return frozenset(nxt)
