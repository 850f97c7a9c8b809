"""The rules of builder/checks.py, each where BuildKit evaluates it (see the comments naming BuildKit's function)."""
from __future__ import annotations

import posixpath
import re
from typing import Callable

from builder.checks import _ONCE, RESERVED_STAGE_NAMES, Warning, secret_like
from grammar import nodes
from grammar.errors import levenshtein

_PLATFORM_WORD = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")
_TARGETPLATFORM = ("$TARGETPLATFORM", "${TARGETPLATFORM}")


def syntax(df: nodes.Dockerfile, lines: list[str]) -> list[Warning]:
    """The rules that read the parsed Dockerfile alone."""
    found = _empty_continuations(df, lines)
    found += _casing(df)
    names: set[str] = set()
    for stage in df.stages:
        found += _from_rules(stage, names)
        found += _stage_rules(df, stage)
    return found


def _empty_continuations(df: nodes.Dockerfile, lines: list[str]) -> list[Warning]:
    """BuildKit's parser warns of an empty line inside a continuation (a comment line there is fine)."""
    found = []
    for inst in df.instructions:
        number = inst.span.line
        while number <= len(lines) and _continues(lines[number - 1], df.escape):
            number += 1
            while number <= len(lines) and lines[number - 1].lstrip(" \t").startswith("#"):
                number += 1
            if number <= len(lines) and not lines[number - 1].strip():
                found.append(Warning("NoEmptyContinuation", "Empty continuation line", inst.span))
                break
    return found


def _continues(line: str, escape: str) -> bool:
    body = line.rstrip(" \t")
    return body.endswith(escape) and not body.lstrip(" \t").startswith("#")


def _casing(df: nodes.Dockerfile) -> list[Warning]:
    """validateCommandCasing: every keyword should follow the casing of the self-consistent majority."""
    keywords = [(s.base.keyword, s.base.span) for s in df.stages]
    keywords += [(i.keyword, i.span) for s in df.stages for i in s.instructions]
    lower = sum(1 for k, _ in keywords if k == k.lower() and k != k.upper())
    upper = sum(1 for k, _ in keywords if k == k.upper() and k != k.lower())
    majority_lower = lower > upper
    found = []
    for keyword, span in sorted(keywords, key=lambda item: item[1].line):
        wanted = "lowercase" if majority_lower else "uppercase"
        if keyword != (keyword.lower() if majority_lower else keyword.upper()):
            found.append(Warning("ConsistentInstructionCasing",
                                 f"Command '{keyword}' should match the case of the command majority ({wanted})",
                                 span))
    return found


def _from_rules(stage: nodes.Stage, names: set[str]) -> list[Warning]:
    base, found = stage.base, []
    args = base.raw_args
    if len(args) == 3:
        written = args[2]
        if written != written.lower():
            found.append(Warning("StageNameCasing", f"Stage name '{written}' should be lowercase", base.span))
        keyword = base.keyword
        if keyword in (keyword.lower(), keyword.upper()):
            wanted = args[1].lower() if keyword == keyword.lower() else args[1].upper()
            if args[1] != wanted:
                found.append(Warning("FromAsCasing", f"'{args[1]}' and '{keyword}' keywords' casing do not match",
                                     base.span))
    if stage.name:
        if stage.name in RESERVED_STAGE_NAMES:
            found.append(Warning("ReservedStageName",
                                 f'Stage name should not use the same name as reserved stage "{stage.name}"',
                                 base.span))
        if stage.name in names:
            found.append(Warning("DuplicateStageName",
                                 f'Duplicate stage name "{stage.name}", stage names should be unique', base.span))
        names.add(stage.name)
    platform = base.flag("platform")
    if platform in _TARGETPLATFORM:
        found.append(Warning("RedundantTargetPlatform", f"Setting platform to predefined {platform} in FROM is "
                             "redundant as this is the default behavior", base.span))
    elif platform and "$" not in platform and _PLATFORM_WORD.match(platform):
        os_name, _, rest = platform.lower().partition("/")
        arch = rest.partition("/")[0]
        if os_name not in (stage.name or "") and (not arch or arch not in (stage.name or "")):
            found.append(Warning("FromPlatformFlagConstDisallowed",
                                 f'FROM --platform flag should not use constant value "{platform}"', base.span))
    return found


def _stage_rules(df: nodes.Dockerfile, stage: nodes.Stage) -> list[Warning]:
    found: list[Warning] = []
    seen: dict[str, nodes.Instruction] = {}
    workdir_set = False
    shell_set = _shell_set_before(df, stage)
    for inst in stage.instructions:
        name = inst.name
        if isinstance(inst, nodes.Maintainer):
            found.append(Warning("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using "
                                 "label", inst.span))
        elif isinstance(inst, (nodes.Env, nodes.Label)):
            if any(kv.legacy for kv in inst.pairs):
                found.append(Warning("LegacyKeyValueFormat", f'"{name} key=value" should be used instead of legacy '
                                     f'"{name} key value" format', inst.span))
            if isinstance(inst, nodes.Env):
                found += [Warning("SecretsUsedInArgOrEnv", "Do not use ARG or ENV instructions for sensitive data "
                                  f'(ENV "{kv.key}")', inst.span) for kv in inst.pairs if secret_like(kv.key)]
        elif isinstance(inst, nodes.Arg):
            found += [Warning("SecretsUsedInArgOrEnv", "Do not use ARG or ENV instructions for sensitive data "
                              f'(ARG "{d.name}")', inst.span) for d in inst.args if secret_like(d.name)]
        elif isinstance(inst, nodes.Shell):
            shell_set = True
        elif isinstance(inst, nodes.Workdir):
            if not workdir_set and not inst.path.startswith(("/", "$")):
                found.append(Warning("WorkdirRelativePath", f'Relative workdir "{inst.path}" can have unexpected '
                                     "results if the base image changes", inst.span))
            workdir_set = True
        elif isinstance(inst, nodes.Expose):
            found += _expose(inst)
        if isinstance(inst, (nodes.Cmd, nodes.Entrypoint)) and isinstance(inst.command, nodes.ShellForm) \
                and not shell_set:
            found.append(Warning("JSONArgsRecommended", f"JSON arguments recommended for {name} to prevent "
                                 "unintended behavior related to OS signals", inst.span))
        if name in _ONCE:
            if name in seen:  # BuildKit points at the earlier one: it is the one without effect
                found.append(Warning("MultipleInstructionsDisallowed", f"Multiple {name} instructions should not be "
                                     "used in the same stage because only the last one will be used",
                                     seen[name].span))
            seen[name] = inst
    return found


def _shell_set_before(df: nodes.Dockerfile, stage: nodes.Stage) -> bool:
    """A SHELL in a stage this one is built FROM (the image config's Shell is inherited)."""
    names = {s.name: s for s in df.stages[:stage.index] if s.name}
    parent = names.get(stage.base.image.lower())
    while parent is not None:
        if any(isinstance(i, nodes.Shell) for i in parent.instructions):
            return True
        parent = names.get(parent.base.image.lower()) if parent.index else None
        if parent is not None and parent.index >= stage.index:
            break
    return False


def _expose(inst: nodes.Expose) -> list[Warning]:
    """convert_expose.go parsePort: `[ip:][hostPort:]containerPort[/proto]`."""
    found = []
    for raw in inst.ports:
        port, _, proto = raw.partition("/")
        if proto and proto != proto.lower():
            found.append(Warning("ExposeProtoCasing", f"Defined protocol '{raw}' in EXPOSE instruction should be "
                                 "lowercase", inst.span))
        if ":" in port:
            found.append(Warning("ExposeInvalidFormat", "EXPOSE instruction should not define an IP address or "
                                 f"host-port mapping, found '{raw}'", inst.span))
    return found


def scoped(df: nodes.Dockerfile, unmatched: tuple) -> list[Warning]:
    """UndefinedVar / UndefinedArgInFrom from the planner's unmatched variables (reportUnmatchedVariables)."""
    found = []
    for record in unmatched:
        suggestion = _suggest(record.name, record.options)
        if record.in_from:
            text = f"FROM argument '{record.name}' is not declared"
            found.append(Warning("UndefinedArgInFrom", text + (f" (did you mean {suggestion}?)" if suggestion
                                                                 else ""), record.span))
        else:
            text = f"Usage of undefined variable '${record.name}'"
            found.append(Warning("UndefinedVar", text + (f" (did you mean ${suggestion}?)" if suggestion else ""),
                                 record.span))
    return found


def _suggest(name: str, options: tuple[str, ...]) -> str:
    """BuildKit's suggest.Search: the first option within Levenshtein distance 2 (the closest)."""
    best, best_distance = "", 3
    for option in options:
        if option == name:
            return ""
        distance = levenshtein(name, option)
        if distance < best_distance:
            best, best_distance = option, distance
    return best


def copy_ignored(df: nodes.Dockerfile, ignored: Callable[[str], bool]) -> list[Warning]:
    """validateCopySourcePath: a COPY/ADD source from the context that .dockerignore excludes."""
    found = []
    for inst in df.instructions:
        if not isinstance(inst, nodes.Copy) or inst.flag("from"):
            continue
        for source in inst.sources:
            if source.startswith("<<") or "$" in source or "://" in source:
                continue
            path = posixpath.normpath("/" + source).lstrip("/")
            if path and path != "." and ignored(path):
                found.append(Warning("CopyIgnoredFile", f'Attempting to {inst.name.capitalize()} file "{source}" '
                                     "that is excluded by .dockerignore", inst.span))
    return found


def invalid_defaults(df: nodes.Dockerfile, default_base: Callable[[nodes.From], str | None]) -> list[Warning]:
    """validateBaseImagesWithDefaultArgs: FROM with only the global ARGs' defaults names no valid image."""
    # lazy: saves ~20 ms at start-up
    from builder.errors import UsageError
    from builder.export.reference import Reference

    found = []
    for stage in df.stages:
        image = default_base(stage.base)
        if image is None or "$" not in stage.base.image:
            continue
        try:
            valid = bool(image) and (image == "scratch" or bool(Reference.parse(image)))
        except UsageError:
            valid = False
        if not valid:
            found.append(Warning("InvalidDefaultArgInFrom", f"Default value for ARG {stage.base.image} results in "
                                 "empty or invalid base image name", stage.base.span))
    return found
