"""Build checks: BuildKit's Dockerfile lint rules (`docker build --check`), same names, messages and links.

The rules and their messages follow BuildKit's frontend/dockerfile/linter/ruleset.go, and each fires where BuildKit
fires it (instructions/parse.go, dockerfile2llb/convert.go and validations.go). Most rules read the parsed
Dockerfile; UndefinedVar and UndefinedArgInFrom need the ARG/ENV scope of each expansion, which only the planner
knows: it records every variable it could not match (`builder.plan.planner.Unmatched`) and `check` turns them into
warnings.

Configuration, as BuildKit: the `# check=skip=RULE,RULE|all;error=true;experimental=RULE|all` directive, replaced
as a whole by the build argument BUILDKIT_DOCKERFILE_CHECK when given. With error=true a build that has warnings
fails before any step runs ("lint violation found for rules: ...").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from builder.errors import PybuildError
from grammar import nodes

DOCS = "https://docs.docker.com/go/dockerfile/rule/"


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    slug: str
    experimental: bool = False

    @property
    def url(self) -> str:
        return DOCS + self.slug + "/" if self.slug else ""


RULES = {r.name: r for r in (
    Rule("StageNameCasing", "Stage names should be lowercase", "stage-name-casing"),
    Rule("FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword", "from-as-casing"),
    Rule("NoEmptyContinuation", "Empty continuation lines will become errors in a future release",
         "no-empty-continuation"),
    Rule("ConsistentInstructionCasing", "All commands within the Dockerfile should use the same casing (either "
         "upper or lower)", "consistent-instruction-casing"),
    Rule("DuplicateStageName", "Stage names should be unique", "duplicate-stage-name"),
    Rule("ReservedStageName", "Reserved words should not be used as stage names", "reserved-stage-name"),
    Rule("JSONArgsRecommended", "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior "
         "related to OS signals", "json-args-recommended"),
    Rule("MaintainerDeprecated", "The MAINTAINER instruction is deprecated, use a label instead to define an image "
         "author", "maintainer-deprecated"),
    Rule("UndefinedArgInFrom", "FROM command must use declared ARGs", "undefined-arg-in-from"),
    Rule("WorkdirRelativePath", "Relative workdir without an absolute workdir declared within the build can have "
         "unexpected results if the base image changes", "workdir-relative-path"),
    Rule("UndefinedVar", "Variables should be defined before their use", "undefined-var"),
    Rule("MultipleInstructionsDisallowed", "Multiple instructions of the same type should not be used in the same "
         "stage", "multiple-instructions-disallowed"),
    Rule("LegacyKeyValueFormat", "Legacy key/value format with whitespace separator should not be used",
         "legacy-key-value-format"),
    Rule("RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this "
         "is the default behavior", "redundant-target-platform"),
    Rule("SecretsUsedInArgOrEnv", "Sensitive data should not be used in the ARG or ENV commands",
         "secrets-used-in-arg-or-env"),
    Rule("InvalidDefaultArgInFrom", "Default value for global ARG results in an empty or invalid base image name",
         "invalid-default-arg-in-from"),
    Rule("FromPlatformFlagConstDisallowed", "FROM --platform flag should not use a constant value",
         "from-platform-flag-const-disallowed"),
    Rule("CopyIgnoredFile", "Attempting to Copy file that is excluded by .dockerignore", "copy-ignored-file"),
    Rule("ExposeProtoCasing", "Protocol in EXPOSE instruction should be lowercase", "expose-proto-casing"),
    Rule("ExposeInvalidFormat", "IP address and host-port mapping should not be used in EXPOSE instruction. This "
         "will become an error in a future release", "expose-invalid-format"),
    # InvalidBaseImagePlatform cannot fire: pybuild refuses a base of another platform (builder/plan/planner.py).
)}
RESERVED_STAGE_NAMES = ("context", "scratch")
_SECRET = re.compile(r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)"
                     r"(?:_|$)")
_NOT_SECRET = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")
_ONCE = ("CMD", "ENTRYPOINT", "HEALTHCHECK")


@dataclass(frozen=True)
class Warning:
    """One rule violation at a Dockerfile location."""

    rule: str
    message: str
    span: nodes.Span

    @property
    def url(self) -> str:
        return RULES[self.rule].url

    @property
    def description(self) -> str:
        return RULES[self.rule].description

    def short(self) -> str:
        """BuildKit's LintFormatShort: `Rule: message (line N)`."""
        return f"{self.rule}: {self.message} (line {self.span.line})"


@dataclass(frozen=True)
class CheckConfig:
    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False

    def wants(self, rule: str) -> bool:
        if RULES[rule].experimental:
            return self.experimental_all or rule in self.experimental
        return not (self.skip_all or rule in self.skip)


def parse_config(text: str, where: str = "# check=") -> CheckConfig:
    """BuildKit's ParseLintOptions: `skip=A,B|all;error=true;experimental=C|all`."""
    values: dict = {}
    for part in filter(None, (p.strip() for p in text.strip().split(";", 2))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("skip", "error", "experimental"):
            raise PybuildError(f"invalid check option {part!r} in {where}",
                               hint="use skip=RULE,RULE|all; error=true|false; experimental=RULE|all")
        if key == "error":
            if value.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise PybuildError(f"failed to parse check option {part!r} in {where}", hint="error=true or false")
            values["error"] = value.lower() in ("1", "t", "true")
        else:
            names = frozenset(n.strip() for n in value.split(","))
            values[f"{key}_all"] = value == "all"
            values[key] = frozenset() if value == "all" else names
    return CheckConfig(**values)


def config_for(dockerfile: nodes.Dockerfile, build_args: dict[str, str]) -> CheckConfig:
    """BUILDKIT_DOCKERFILE_CHECK (a build argument) replaces the `# check=` directive, as in BuildKit."""
    if "BUILDKIT_DOCKERFILE_CHECK" in build_args:
        return parse_config(build_args["BUILDKIT_DOCKERFILE_CHECK"], "BUILDKIT_DOCKERFILE_CHECK")
    return parse_config(dockerfile.directive("check") or "")


def check(dockerfile: nodes.Dockerfile, lines: list[str], config: CheckConfig, *,
          unmatched: tuple = (), ignored: Callable[[str], bool] | None = None,
          default_base: Callable[[nodes.From], str | None] | None = None) -> list[Warning]:
    """Every warning of `dockerfile` (its physical `lines`) that `config` keeps, in Dockerfile order.

    unmatched: the planner's (span, variable, in FROM) records; ignored: the .dockerignore matcher of the
    context (CopyIgnoredFile); default_base: a FROM's image with the global ARGs' defaults only, or None when it
    cannot be expanded (InvalidDefaultArgInFrom)."""
    from builder import checkrules  # lazy: saves ~3 ms at start-up

    found = checkrules.syntax(dockerfile, lines)
    found += checkrules.scoped(dockerfile, unmatched)
    if ignored is not None:
        found += checkrules.copy_ignored(dockerfile, ignored)
    if default_base is not None:
        found += checkrules.invalid_defaults(dockerfile, default_base)
    unique = {(w.rule, w.message, w.span.line): w for w in found if config.wants(w.rule)}
    order = list(RULES)
    return sorted(unique.values(), key=lambda w: (w.span.line, order.index(w.rule), w.message))


def failure(warnings: list[Warning]) -> PybuildError:
    """The error of a build with `# check=error=true` and warnings (BuildKit's Linter.Error)."""
    rules = ", ".join(dict.fromkeys(w.rule for w in warnings))
    return PybuildError(f"lint violation found for rules: {rules}", context=render(warnings, None),
                        hint="fix the instructions above, or skip the rules with # check=skip=RULE")


def render(warnings: list[Warning], lines: list[str] | None) -> str:
    """buildx's --check report: each rule and link, the message, file:line and the lines concerned."""
    out = []
    for w in warnings:
        out.append(f"WARNING: {w.rule} - {w.url}")
        out.append(w.message)
        out.append(f"{w.span.file}:{w.span.line}")
        if lines:
            out.append("-" * 20)
            last = min(w.span.end_line, w.span.line + 4, len(lines))
            for number in range(w.span.line, last + 1):
                marker = ">>>" if number == w.span.line else "   "
                out.append(f" {number:>3} | {marker} {lines[number - 1][:200]}")
            out.append("-" * 20)
        out.append("")
    return "\n".join(out).rstrip("\n")


def summary(warnings: list[Warning]) -> str:
    """What docker build prints after a build: the count and one short line each."""
    count = f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''} found"
    return "\n".join([f" {count}:"] + [f" - {w.short()}" for w in warnings])


def secret_like(key: str) -> bool:
    return bool(_SECRET.search(key)) and not _NOT_SECRET.search(key)


def for_build(dockerfile: nodes.Dockerfile, text: str, build_args: dict[str, str], unmatched: tuple,
              ignore_patterns: list[str]) -> tuple[list[Warning], CheckConfig]:
    """The warnings of a planned build and the configuration that filtered them."""
    config = config_for(dockerfile, build_args)
    ignored = None
    if ignore_patterns:
        from builder.context.dockerignore import PatternMatcher  # lazy: saves ~12 ms at start-up

        ignored = PatternMatcher(ignore_patterns).matches
    return check(dockerfile, text.splitlines(), config, unmatched=unmatched, ignored=ignored,
                 default_base=_default_bases(dockerfile)), config


def _default_bases(dockerfile: nodes.Dockerfile) -> Callable[[nodes.From], str | None]:
    """FROM images expanded with the global ARGs' defaults only (no --build-arg), as BuildKit checks them."""
    # lazy: saves ~38 ms at start-up
    from builder.plan.planner import platform_args
    from grammar.shell import ShellExpansionError, ShellLex

    lex = ShellLex(dockerfile.escape)
    env = dict(platform_args())
    for arg in dockerfile.meta_args:
        for decl in arg.args:
            if decl.default is not None:
                try:
                    env[decl.name] = lex.process_word(decl.default, env)
                except ShellExpansionError:
                    return lambda base: None

    def expand(base: nodes.From) -> str | None:
        try:
            return lex.process_word(base.image, env)
        except ShellExpansionError:
            return None
    return expand
