"""BuildKit-exact shell-word processing: `$VAR`/`${VAR...}` expansion, quote removal, word splitting.

This mirrors moby/buildkit frontend/dockerfile/shell/lex.go rune for rune, quirks included, because
the answers must be BuildKit's (../shared/conformance/README.md §2):

* The escape character (``\\`` or `````) makes the next character literal outside quotes; a lone
  trailing one is dropped. Inside double quotes it only escapes ``"``, ``$`` and itself.
* Words of `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}` are read with "raw escapes" (the escape
  character is kept), so the pattern code can see ``\\*``.
* `${VAR//p/r}` uses Go's ``Regexp.ReplaceAllString``, so ``$0``/``${0}`` in the replacement is the
  match, other ``$name`` are empty and ``$$`` is ``$``; a single `/` replaces literally.
* process_words: one word buffer is shared by the nested scans of `${...}` (BuildKit's
  ``shellWord.wordsBuffer``), so text buffered just before a `${VAR:-w}`-style modifier is lost:
  ``pre${X:-a}`` splits to ``["a"]``. Only `process_words` is affected.
* A ``<<`` keeps the blanks after it glued to the next word (BuildKit's heredoc marker handling).

Everything here is pure: no builder imports, no I/O.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

# text/scanner's EOF, and what Go's string(rune(EOF)) prints in "unsupported modifier" messages.
_EOF = ""
_GO_BAD_RUNE = "\ufffd"
_BOM = "\ufeff"
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_HEREDOC_BLANKS = frozenset("\t\r ")
# Go's unicode.IsSpace; Python's str.isspace also accepts U+001C..U+001F, Go does not.
_GO_SPACES = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                       "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# Characters convertShellPatternToRegex escapes before handing the pattern to Go's regexp.
_PATTERN_META = frozenset("[]{}.+()|^$")


class ShellExpansionError(ValueError):
    """A word BuildKit refuses to expand; `reason` is BuildKit's message, `word` the input."""

    def __init__(self, word: str, reason: str) -> None:
        super().__init__(f"failed to process {go_quote(word)}: {reason}")
        self.word = word
        self.reason = reason


class _Fail(Exception):
    """Internal: one BuildKit error message, wrapped into ShellExpansionError at the top."""


@dataclass(frozen=True, slots=True)
class ShellLex:
    """BuildKit's shell.Lex with its default options (quotes processed, unset variables expand to '')."""

    escape: str = "\\"

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand `word` and remove quotes; whitespace is kept, the result is one string."""
        return self._run(word, env, capture=True).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand `word`, remove quotes and split on unquoted whitespace (BuildKit ProcessWords)."""
        return self._run(word, env, capture=False).words

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str], set[str]]:
        """process_word plus the variable names looked up and found, and looked up and not found."""
        state = self._run(word, env, capture=True)
        return state.result, state.matched, state.unmatched

    def _run(self, word: str, env: Mapping[str, str], *, capture: bool) -> "_ShellWord":
        state = _ShellWord(word, env, self.escape, capture)
        try:
            state.result, state.words = state.process_stop_on(_EOF, raw_escapes=False)
        except _Fail as exc:
            raise ShellExpansionError(word, str(exc)) from None
        except RecursionError:
            raise ShellExpansionError(word, "substitutions nested too deeply") from None
        return state


class _Scanner:
    """Go text/scanner as lex.go uses it: Peek/Next over runes, a BOM skipped at the very start."""

    __slots__ = ("text", "pos")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 1 if text.startswith(_BOM) else 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch


class _Buffer:
    """A string builder that can be shared (BuildKit's shellWord.wordsBuffer)."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def take(self) -> str:
        text = "".join(self.parts)
        self.reset()
        return text

    def reset(self) -> None:
        self.parts.clear()
        self.size = 0


class _Words:
    """lex.go wordsStruct: collects words; whitespace splits only text added with add_char."""

    __slots__ = ("buf", "words", "in_word")

    def __init__(self, buf: _Buffer) -> None:
        self.buf = buf
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _GO_SPACES:
            if self.in_word and self.buf.size:
                self.words.append(self.buf.take())
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw(self, text: str) -> None:
        self.buf.write(text)
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.buf.size:
            self.words.append(self.buf.take())
            self.in_word = False
        return self.words


class _ShellWord:
    """The state of one process call (lex.go shellWord)."""

    def __init__(self, word: str, env: Mapping[str, str], escape: str, capture: bool) -> None:
        self.scanner = _Scanner(word)
        self.env = env
        self.escape = escape
        self.capture = capture
        self.raw_escapes = False
        self.words_buffer = _Buffer()
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        self.result = ""
        self.words: list[str] = []

    def process_stop_on(self, stop: str, *, raw_escapes: bool) -> tuple[str, list[str]]:
        """Scan up to `stop` (consumed) or the end; returns the text and its words."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._scan(stop)
        finally:
            self.raw_escapes = saved

    def _scan(self, stop: str) -> tuple[str, list[str]]:
        sc = self.scanner
        result: list[str] = []
        self.words_buffer.reset()  # shared with the caller's scan: BuildKit's quirk, kept on purpose
        words = _Words(self.words_buffer)
        while (ch := sc.peek()) != _EOF:
            if stop and ch == stop:
                sc.next()
                return "".join(result), words.get_words()
            if ch in "$<'\"":
                text = self._special(ch)
                result.append(text)
                if ch == "$":
                    words.add_string(text)
                else:
                    words.add_raw(text)
                continue
            ch = sc.next()
            if ch == self.escape:
                if self.raw_escapes:
                    words.add_raw(ch)
                    result.append(ch)
                ch = sc.next()
                if ch == _EOF:
                    break
                words.add_raw(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise _Fail(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def _special(self, ch: str) -> str:
        if ch == "$":
            return self._dollar()
        if ch == "<":
            return self._possible_heredoc()
        if ch == "'":
            return self._single_quote()
        return self._double_quote()

    def _single_quote(self) -> str:
        sc = self.scanner
        sc.next()
        out: list[str] = []
        while True:
            ch = sc.next()
            if ch == _EOF:
                raise _Fail("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def _double_quote(self) -> str:
        sc = self.scanner
        sc.next()
        out: list[str] = []
        while True:
            peek = sc.peek()
            if peek == _EOF:
                raise _Fail("unexpected end of statement while looking for matching double-quote")
            if peek == '"':
                sc.next()
                return "".join(out)
            if peek == "$":
                out.append(self._dollar())
                continue
            ch = sc.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                after = sc.peek()
                if after == _EOF:
                    continue  # the unterminated quote is reported on the next turn
                if after in ('"', "$", self.escape):
                    ch = sc.next()
            out.append(ch)

    def _possible_heredoc(self) -> str:
        sc = self.scanner
        sc.next()
        if sc.peek() != "<":
            return "<"
        sc.next()
        blanks: list[str] = []
        while sc.peek() and sc.peek() in _HEREDOC_BLANKS:
            blanks.append(sc.next())
        return "<<" + "".join(blanks)

    def _name(self) -> str:
        """A variable name: letters/digits/_, all digits if it starts with one, or one special parameter."""
        sc = self.scanner
        name: list[str] = []
        while (ch := sc.peek()) != _EOF:
            if not name and _is_digit(ch):
                while sc.peek() and _is_digit(sc.peek()):
                    name.append(sc.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return sc.next()
            if not (ch.isalpha() or _is_digit(ch) or ch == "_"):
                break
            name.append(sc.next())
        return "".join(name)

    def _get_env(self, name: str) -> tuple[str, bool]:
        value = self.env.get(name)
        if value is not None:
            if self.capture:
                self.matched.add(name)
            return value, True
        if self.capture:
            self.unmatched.add(name)
        return "", False

    def _dollar(self) -> str:
        sc = self.scanner
        sc.next()
        if sc.peek() != "{":
            name = self._name()
            return self._get_env(name)[0] if name else "$"
        sc.next()
        if sc.peek() == _EOF:
            raise _Fail("syntax error: missing '}'")
        if sc.peek() in "{}:":
            raise _Fail("syntax error: bad substitution")
        name = self._name()
        ch = sc.next()
        if ch == "}":
            return self._get_env(name)[0]
        if ch == "/":
            return self._replace(name)
        if ch == ":":
            ch = sc.next()
            return self._modifier(name, ch, ":" + (ch or _GO_BAD_RUNE), null_is_unset=True)
        if ch in ("+", "-", "?", "#", "%"):
            return self._modifier(name, ch, ch, null_is_unset=False)
        raise _Fail(f"unsupported modifier ({ch or _GO_BAD_RUNE}) in substitution")

    def _modifier_word(self, stop: str, *, raw_escapes: bool, missing: str) -> str:
        try:
            return self.process_stop_on(stop, raw_escapes=raw_escapes)[0]
        except _Fail:
            if self.scanner.peek() == _EOF:
                raise _Fail(missing) from None
            raise

    def _modifier(self, name: str, ch: str, chs: str, *, null_is_unset: bool) -> str:
        trim = ch in ("#", "%")
        if null_is_unset and trim:
            raise _Fail(f"unsupported modifier ({chs}) in substitution")
        word = self._modifier_word("}", raw_escapes=trim, missing="syntax error: missing '}'")
        value, is_set = self._get_env(name)
        empty = not is_set or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not is_set:
                raise _Fail(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _Fail(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if trim:
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            return _trim_suffix(word, value, greedy) if ch == "%" else _trim_prefix(word, value, greedy)
        raise _Fail(f"unsupported modifier ({chs}) in substitution")

    def _replace(self, name: str) -> str:
        sc = self.scanner
        replace_all = sc.peek() == "/"
        if replace_all:
            sc.next()
        pattern = self._modifier_word("/", raw_escapes=True, missing="syntax error: missing '/' in ${}")
        replacement = self._modifier_word("}", raw_escapes=True, missing="syntax error: missing '}'")
        value = self._get_env(name)[0]
        regex = _pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            return _go_replace_all(regex, value, replacement)
        found = regex.search(value)
        if found is None:
            return value
        return value[:found.start()] + replacement + value[found.end():]


def _is_digit(ch: str) -> bool:
    # Go's unicode.IsDigit is category Nd; str.isdigit would also accept superscripts.
    return ch.isdecimal()


def _pattern_regex(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """lex.go convertShellPatternToRegex: `*` any run, `?` any character, `\\` escapes `*?\\`."""
    sc = _Scanner(pattern)
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    while (tok := sc.next()) != _EOF:
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\":
            if sc.peek() in ("}", "/") and sc.peek():
                continue  # `\}` and `\/` escape the ${} syntax, not the pattern
            tok = sc.next()
            if tok not in ("*", "?", "\\"):
                raise _Fail(f"invalid pattern ({pattern}) in substitution: "
                            f"invalid escape '\\{tok or _GO_BAD_RUNE}'")
            out.append(re.escape(tok))
        else:
            out.append(re.escape(tok))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    found = _pattern_regex(pattern, greedy=greedy, anchored=True).search(value)
    return value[found.end():] if found else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern but keep each `\\x` pair in order (lex.go reversePattern)."""
    out = list(pattern)
    last = len(pattern) - 1
    i = 0
    while i <= last:
        tok = pattern[i]
        if tok == "\\" and i != last:
            out[last - i - 1] = tok
            out[last - i] = pattern[i + 1]
            i += 2
        else:
            out[last - i] = tok
            i += 1
    return "".join(out)


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # a regex cannot find the shortest rightmost match, so reverse both and trim a prefix
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _go_replace_all(regex: re.Pattern[str], value: str, template: str) -> str:
    """Go's Regexp.ReplaceAllString: its empty-match rule and `$` template expansion."""
    out: list[str] = []
    last_end = 0
    pos = 0
    while pos <= len(value):
        found = regex.search(value, pos)
        if found is None:
            break
        start, end = found.span()
        out.append(value[last_end:start])
        if end > last_end or start == 0:
            out.append(_go_expand(template, found.group(0)))
        last_end = end
        pos = pos + 1 if pos + 1 > end else end
    out.append(value[last_end:])
    return "".join(out)


def _go_expand(template: str, match: str) -> str:
    """Regexp.Expand with one group (0, the match): `$0`/`${0}` is the match, `$$` a `$`."""
    out: list[str] = []
    while True:
        before, dollar, template = template.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if template.startswith("$"):
            out.append("$")
            template = template[1:]
            continue
        parsed = _go_template_name(template)
        if parsed is None:
            out.append("$")
            continue
        name, template = parsed
        if name == "0":
            out.append(match)


def _go_template_name(text: str) -> tuple[str, str] | None:
    """regexp's extract: `name` or `{name}` (letters, digits, `_`); None if malformed."""
    brace = text.startswith("{")
    i = 1 if brace else 0
    start = i
    while i < len(text) and (text[i].isalpha() or _is_digit(text[i]) or text[i] == "_"):
        i += 1
    if i == start:
        return None
    name = text[start:i]
    if brace:
        if i >= len(text) or text[i] != "}":
            return None
        i += 1
    return name, text[i:]


_QUOTE_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """Go's %q of a string (strconv.Quote), as BuildKit prints the word in its errors."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _QUOTE_SHORT:
            out.append(_QUOTE_SHORT[ch])
        elif 0x20 <= code < 0x7F or (code > 0x7F and unicodedata.category(ch)[0] in "LMNPS"):
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
