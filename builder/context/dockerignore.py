""".dockerignore: reading the file, matching paths, and the filtered walk of the build context.

BuildKit uses moby/patternmatcher (matching, `ignorefile.ReadAll`) and tonistiigi/fsutil (the walk);
this module gives their answers (../shared/conformance/README.md §3):

* `read_patterns` turns the file text into the pattern list (BOM, `#` comments at column 0, trim,
  `!`, path-clean, one leading `/` dropped).
* `PatternMatcher` compiles every pattern once, the way patternmatcher does: a plain string compare
  for literal patterns, a prefix test for `dir/**`, a suffix test for `**/name`, otherwise a regular
  expression. patternmatcher builds a Go (RE2) expression in which `[...]`, `^` and `\\x` keep their
  RE2 meaning; `goglob.re2_to_python` translates that expression so character classes,
  `[:alpha:]`, `\\d`, `|`, `{n,m}` and their errors behave as in Go. Like Go, a pattern whose
  expression does not compile only fails when it is first evaluated (`[z-a]` passes the syntax
  check of filepath.Match).
* `walk` is fsutil's filtered walk: depth-first, names sorted by bytes, symlinks not followed, an
  excluded directory skipped unless an exception (`!pattern`) could re-include something inside it,
  and the not-yet-reported parents of a re-included entry reported just before it.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.context.goglob import BadPattern, check_match_syntax, re2_to_python
from builder.context.linmatch import LinearPattern, TooComplex, compile_pattern

Excluded = Callable[[str], bool]  # relative path -> excluded by the patterns

# Go's unicode.IsSpace (strings.TrimSpace); str.strip would also remove U+001C..U+001F.
_GO_SPACES = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
              "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_BOM = "\ufeff"
# patternmatcher's shouldEscape means `.+()|{}$`, but its bitmap sets bit c/8 of a byte, which is
# lost for c >= 64: only these five are escaped, and `|`, `{`, `}` reach RE2 as syntax.
_REGEX_ESCAPED = frozenset("$()+.")
_WILDCARD_CHARS = frozenset("*[]?^\\")  # fsutil: an exception with these may match anywhere


class DockerignoreError(ValueError):
    """A pattern BuildKit rejects (bad syntax, `!` alone), when building or using the matcher."""


def go_clean(path: str) -> str:
    """Go's path.Clean: collapse `//`, drop `.`, resolve `..` lexically; '' becomes '.'."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def _go_dir(path: str) -> str:
    """Go's filepath.Dir: everything before the last `/`, cleaned."""
    return go_clean(path[:path.rfind("/") + 1])


def read_patterns(text: str) -> list[str]:
    """The pattern list of a .dockerignore file (patternmatcher ignorefile.ReadAll)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line, it does not start an empty one
    patterns = []
    for number, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
        if number == 0 and line.startswith(_BOM):
            line = line[1:]
        if line.startswith("#"):
            continue
        line = line.strip(_GO_SPACES)
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip(_GO_SPACES)
        if line:
            line = go_clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


@dataclass(frozen=True, slots=True)
class Pattern:
    """One compiled pattern. kind: exact, prefix (`dir/**`), suffix (`**/name`) or regexp.

    `regex` answers for the path itself; `tree` for the path or any parent directory of a clean
    relative path (its end anchors also hold before a `/`; None when a `\\z` inside the pattern
    makes that shortcut wrong). Both are None when the RE2 expression does not compile: `error`
    says why, and it is raised when the pattern is first evaluated.
    """

    text: str
    exclusion: bool
    kind: str
    regex: re.Pattern[str] | LinearPattern | None
    tree: re.Pattern[str] | LinearPattern | None
    error: str | None = None

    def match(self, path: str) -> bool:
        """Whether this pattern alone matches `path` (no parent directories considered)."""
        if self.regex is None:
            raise DockerignoreError(f"syntax error in pattern {self.text!r}: {self.error}")
        return self.regex.search(path) is not None

    def match_tree(self, path: str) -> bool:
        """Whether it matches clean relative `path` or one of its parent directories."""
        if self.tree is not None:
            return self.tree.search(path) is not None
        if self.match(path):
            return True
        parent = _go_dir(path)
        return parent != "." and any(self.match(p) for p in _parent_prefixes(parent))

    def literal_prefix(self) -> str:
        """fsutil patternWithoutTrailingGlob: the text without a trailing `/**` or `/*`."""
        text = self.text.removesuffix("/**")
        return text.removesuffix("/*")


@dataclass(frozen=True, slots=True)
class MatchInfo:
    """Per-pattern results for a directory, handed to its children (patternmatcher MatchInfo)."""

    parent_matched: tuple[bool, ...] = ()


class PatternMatcher:
    """A .dockerignore pattern list: `matches(path)` is True when the path is excluded."""

    def __init__(self, patterns: list[str]) -> None:
        compiled = []
        for raw in patterns:
            text = raw.strip(_GO_SPACES)
            if not text:
                continue
            text = go_clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if len(text) == 1:
                    raise DockerignoreError('illegal exclusion pattern: "!"')
                text = text[1:]
            try:
                check_match_syntax(text)
            except BadPattern:
                raise DockerignoreError(f"syntax error in pattern {raw!r}") from None
            compiled.append(_compile(text, exclusion))
        self.patterns: tuple[Pattern, ...] = tuple(compiled)
        self.exclusions = any(p.exclusion for p in compiled)
        # fsutil descends into an excluded directory for any wildcard exception, else by prefix
        self._exception_prefixes = tuple(p.literal_prefix() + "/" for p in compiled if p.exclusion)
        self._wild_exceptions = any(
            p.exclusion and not _WILDCARD_CHARS.isdisjoint(p.literal_prefix()) for p in compiled)

    def matches(self, path: str) -> bool:
        """Is `path` (relative, `/`-separated) excluded? Path-cleaned; the context root never is."""
        path = go_clean(path)
        if path == ".":
            return False
        if path.startswith("/"):
            return self.matches_or_parent_matches(path)
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion == matched and pattern.match_tree(path):
                matched = not pattern.exclusion
        return matched

    def matches_or_parent_matches(self, path: str) -> bool:
        """patternmatcher MatchesOrParentMatches: `path` as given, each pattern also tried on its parents."""
        parent = _go_dir(path)
        parents = _parent_prefixes(parent) if parent != "." else ()
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.match(path) or any(pattern.match(p) for p in parents):
                matched = not pattern.exclusion
        return matched

    def matches_with_parents(self, path: str, parent: MatchInfo | None = None) -> tuple[bool, MatchInfo]:
        """patternmatcher MatchesUsingParentResults: reuse the parent directory's per-pattern results.

        Walk from the top: pass the MatchInfo returned for a directory when asking about its entries.
        Without one (None or empty) parents are checked like matches_or_parent_matches.
        """
        inherited = parent.parent_matched if parent else ()
        if inherited and len(inherited) != len(self.patterns):
            raise ValueError("MatchInfo comes from a different matcher")
        parents: tuple[str, ...] | None = None
        matched = False
        results = [False] * len(self.patterns)
        for i, pattern in enumerate(self.patterns):
            hit = inherited[i] if inherited else False
            if not hit:
                if pattern.exclusion != matched:
                    continue
                hit = pattern.match(path)
                if not hit and not inherited:
                    if parents is None:
                        dirname = _go_dir(path)
                        parents = _parent_prefixes(dirname) if dirname != "." else ()
                    hit = any(pattern.match(p) for p in parents)
            results[i] = hit
            if hit:
                matched = not pattern.exclusion
        return matched, MatchInfo(tuple(results))

    def could_match_inside(self, dirpath: str) -> bool:
        """Must a walk descend into excluded `dirpath`? Only if an exception could re-include something."""
        if not self.exclusions:
            return False
        if self._wild_exceptions:
            return True
        prefix = dirpath + "/"
        return any(p.startswith(prefix) for p in self._exception_prefixes)


def _parent_prefixes(dirname: str) -> tuple[str, ...]:
    parts = dirname.split("/")
    return tuple("/".join(parts[:i + 1]) for i in range(len(parts)))


def _compile(text: str, exclusion: bool) -> Pattern:
    """patternmatcher Pattern.compile: pick the match kind and build the RE2 expression."""
    reg = ["^"]
    kind = "exact"
    start = 1 if text.startswith(_BOM) else 0  # Go's text/scanner skips a leading BOM
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        first = i == start
        i += 1
        if ch == "*" and i < n and text[i] == "*":
            i += 1
            if i < n and text[i] == "/":
                i += 1
            if i >= n:
                if kind == "exact":
                    kind = "prefix"
                else:
                    reg.append(".*")
                    kind = "regexp"
            else:
                reg.append("(.*/)?")
                kind = "regexp"
            if first:
                kind = "suffix"
        elif ch in "*?":
            reg.append("[^/]*" if ch == "*" else "[^/]")
            kind = "regexp"
        elif ch in _REGEX_ESCAPED:
            reg.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                reg.append("\\" + text[i])
                i += 1
                kind = "regexp"
            else:
                reg.append("\\")  # unreachable: the syntax check rejects a trailing backslash
        elif ch in "[]":
            reg.append(ch)
            kind = "regexp"
        else:
            reg.append(ch)
    if kind != "regexp":
        return Pattern(text, exclusion, kind, *_literal_regexes(kind, text))
    reg.append("$")
    expr = "".join(reg)
    try:
        regex = compile_pattern(re2_to_python(expr))
        # an end anchor inside the pattern (`\\z`, maybe a false alarm) must stay "end of text"
        tree = None if "\\z" in expr else compile_pattern(re2_to_python(expr, end_at_slash=True))
        return Pattern(text, exclusion, kind, regex, tree)
    except (BadPattern, TooComplex) as exc:
        return Pattern(text, exclusion, kind, None, None, str(exc))


def _literal_regexes(kind: str, text: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """patternmatcher's string tests (exact, prefix, suffix) as (path, path-or-parents) regexes."""
    if kind == "prefix":
        prefix = re.compile(r"\A" + re.escape(text[:-2]))  # `dir/**`: starts with `dir/`
        return prefix, prefix
    forms = []
    for end in (r"\Z", r"(?=/|\Z)"):
        if kind == "exact":
            forms.append(r"\A" + re.escape(text) + end)
            continue
        suffix = text[2:]  # `**/name`: ends with `/name`, or is `name`
        alternatives = [re.escape(suffix) + end]
        if suffix.startswith("/"):
            alternatives.append(r"\A" + re.escape(suffix[1:]) + end)
        forms.append("|".join(alternatives))
    return re.compile(forms[0]), re.compile(forms[1])


@dataclass(slots=True)
class _Visited:
    """A directory on the walk stack: its match results and whether it has been reported."""

    path: str
    info: MatchInfo
    stat: os.stat_result
    reported: bool


def walk(root: Path, matcher: PatternMatcher | None) -> Iterator[tuple[str, os.stat_result]]:
    """The build context as BuildKit sends it: (relative `/` path, lstat) in fsutil walk order.

    Raises OSError when a directory that is not excluded cannot be read; entries that vanish
    during the walk are skipped, as in fsutil.
    """
    yield from _walk_dir(os.fspath(root), "", [], matcher)


def _walk_dir(host: str, rel: str, parents: list[_Visited],
              matcher: PatternMatcher | None) -> Iterator[tuple[str, os.stat_result]]:
    try:
        names = sorted(os.listdir(host), key=os.fsencode)
    except (FileNotFoundError, NotADirectoryError):
        return
    except PermissionError:
        if parents and not parents[-1].reported:
            return  # fsutil ignores permission errors inside excluded directories
        raise
    for name in names:
        child_rel = f"{rel}/{name}" if rel else name
        child_host = os.path.join(host, name)
        try:
            st = os.lstat(child_host)
        except FileNotFoundError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        excluded, info = False, MatchInfo()
        if matcher is not None:
            excluded, info = matcher.matches_with_parents(child_rel, parents[-1].info if parents else None)
            if excluded and is_dir and not matcher.could_match_inside(child_rel):
                continue
        if not excluded:
            for parent in parents:
                if not parent.reported:
                    parent.reported = True
                    yield parent.path, parent.stat
            yield child_rel, st
        if is_dir:
            node = _Visited(child_rel, info, st, not excluded)
            yield from _walk_dir(child_host, child_rel, [*parents, node], matcher)


def visit(excluded: Excluded | None, rel: str, is_dir: bool) -> tuple[bool, bool]:
    """(include the entry, descend into it) for a .dockerignore'd walk: an excluded directory is still entered
    when an exception (`!pattern`) could re-include something inside it (fsutil's rule)."""
    if excluded is None or not excluded(rel):
        return True, is_dir
    matcher = getattr(excluded, "__self__", None)
    could = getattr(matcher, "could_match_inside", None)
    return False, bool(is_dir and could is not None and could(rel))
