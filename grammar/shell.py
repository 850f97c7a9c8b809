"""BuildKit-exact shell-word processing: `$VAR`/`${VAR...}` expansion, quote removal, word splitting.

This mirrors moby/buildkit frontend/dockerfile/shell/lex.go rune for rune, quirks included, because
the answers must be BuildKit's (../shared/conformance/README.md §2):

* The escape character (``\\`` or `````) makes the next character literal outside quotes; a lone
  trailing one is dropped. Inside double quotes it only escapes ``"``, ``$`` and itself.
* Words of `${VAR#p}`, `${VAR%p}` and `${VAR/p/r}` are read with "raw escapes" (the escape
  character is kept), so the pattern code can see ``\\*``.
* Patterns and replacements are handled in `grammar.shellpattern` (`${VAR//p/r}` follows Go's
  ``Regexp.ReplaceAllString``: ``\\$0`` in the replacement is the match).
* process_words: one word buffer is shared by the nested scans of `${...}` (BuildKit's
  ``shellWord.wordsBuffer``), so text buffered just before a `${VAR:-w}`-style modifier is lost:
  ``pre${X:-a}`` splits to ``["a"]``. Only `process_words` is affected.
* A ``<<`` keeps the blanks after it glued to the next word (BuildKit's heredoc marker handling).

Everything here is pure: no builder imports, no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from grammar.dump import go_quote
from grammar.errors import shorten
from grammar.shellpattern import ShellPatternError, replace, trim_prefix, trim_suffix

# text/scanner's EOF, and what Go's string(rune(EOF)) prints in "unsupported modifier" messages.
_EOF = ""
_GO_BAD_RUNE = "\ufffd"
_BOM = "\ufeff"
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_HEREDOC_BLANKS = frozenset("\t\r ")
MAX_NESTING = 100  # `${a:-${b:-...}}` levels; BuildKit has no bound but Go's stack, Python's recursion is shallower
_SHOWN = 120  # characters of the word an error quotes
# Go's unicode.IsSpace; Python's str.isspace also accepts U+001C..U+001F, Go does not.
_GO_SPACES = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                       "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


class ShellExpansionError(ValueError):
    """A word BuildKit refuses to expand; `reason` is BuildKit's message, `word` the input."""

    def __init__(self, word: str, reason: str) -> None:
        super().__init__(f"failed to process {go_quote(shorten(word, _SHOWN))}: {shorten(reason, _SHOWN)}")
        self.word = word
        self.reason = reason


class _Fail(Exception):
    """Internal: one BuildKit error message, wrapped into ShellExpansionError at the top."""


@dataclass(frozen=True, slots=True)
class ShellLex:
    """BuildKit's shell.Lex with its default options (quotes processed, unset variables expand to '')."""

    escape: str = "\\"
    skip_quotes: bool = False  # lex.go SkipProcessQuotes: quotes are plain characters (COPY heredoc bodies)

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
        state.specials = "$<" if self.skip_quotes else "$<'\""
        try:
            state.result, state.words = state.process_stop_on(_EOF, raw_escapes=False)
        except (_Fail, ShellPatternError) as exc:
            raise ShellExpansionError(word, str(exc)) from None
        except RecursionError:  # not reached with MAX_NESTING: kept as a last guard
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
        self.specials = "$<'\""  # what _special handles; "$<" with skip_quotes
        self.depth = 0

    def process_stop_on(self, stop: str, *, raw_escapes: bool) -> tuple[str, list[str]]:
        """Scan up to `stop` (consumed) or the end; returns the text and its words."""
        if self.depth >= MAX_NESTING:
            raise _Fail(f"substitutions nested too deeply (more than {MAX_NESTING} levels)")
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        self.depth += 1
        try:
            return self._scan(stop)
        finally:
            self.raw_escapes = saved
            self.depth -= 1

    def _scan(self, stop: str) -> tuple[str, list[str]]:
        sc = self.scanner
        result: list[str] = []
        self.words_buffer.reset()  # shared with the caller's scan: BuildKit's quirk, kept on purpose
        words = _Words(self.words_buffer)
        while (ch := sc.peek()) != _EOF:
            if stop and ch == stop:
                sc.next()
                return "".join(result), words.get_words()
            if ch in self.specials:
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
        except (_Fail, ShellPatternError):
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
            return trim_suffix(word, value, greedy) if ch == "%" else trim_prefix(word, value, greedy)
        raise _Fail(f"unsupported modifier ({chs}) in substitution")

    def _replace(self, name: str) -> str:
        sc = self.scanner
        replace_all = sc.peek() == "/"
        if replace_all:
            sc.next()
        pattern = self._modifier_word("/", raw_escapes=True, missing="syntax error: missing '/' in ${}")
        replacement = self._modifier_word("}", raw_escapes=True, missing="syntax error: missing '}'")
        value = self._get_env(name)[0]
        return replace(pattern, value, replacement, replace_all=replace_all)


def _is_digit(ch: str) -> bool:
    # Go's unicode.IsDigit is category Nd; str.isdigit would also accept superscripts.
    return ch.isdecimal()
