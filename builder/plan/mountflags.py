"""RUN --mount flags parsed and validated into typed RunMount values at plan time (BuildKit's
instructions/commands_runmount.go); builder/ops/mounts.py only realises them when the step runs."""
from __future__ import annotations

import csv
import re
from typing import Callable

from builder.errors import PybuildError
from builder.plan.steps import RunMount

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_BOOL_KEYS = ("readonly", "ro", "rw", "readwrite", "required")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")



def parse_mount(value: str, expand: Callable[[str], str]) -> dict[str, str]:
    """`type=cache,target=/x,id=y` → dict (csv rules as BuildKit: quoted fields allowed)."""
    # lazy: saves ~1 ms at start-up
    from builder.plan.features import MOUNT_OPTIONS, REFUSED
    from grammar.errors import suggest

    fields: dict[str, str] = {}
    for item in next(csv.reader([value])):
        key, sep, val = item.partition("=")
        key = key.strip().lower()
        option = MOUNT_OPTIONS.get(key)
        if option is None:
            match = suggest(key, list(MOUNT_OPTIONS))
            raise PybuildError(f"unexpected key '{key}' in '{item}' of --mount={value}",
                               hint=f"did you mean {match}=?" if match else "options: " + ", ".join(MOUNT_OPTIONS),
                               reference="invalid-mount")
        if option.state == REFUSED:
            raise PybuildError(f"--mount option {key}= is not supported by pybuild yet ({option.note})",
                               hint="remove it, or build this Dockerfile with BuildKit", reference="unsupported-flag")
        if not sep:
            if key in _BOOL_KEYS:
                val = "true"
            else:
                raise PybuildError(f"invalid field {item!r} in --mount={value}", hint="fields are key=value",
                                   reference="invalid-mount")
        fields[key] = expand(val) if key not in ("type",) else val
    return fields


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes", "")


def _number(fields: dict[str, str], key: str, base: int) -> int | None:
    """uid/gid (decimal) or mode (octal, as BuildKit's strconv.ParseUint(v, 8, 32)); None when absent."""
    value = fields.get(key)
    if not value:
        return None
    try:
        number = int(value, base)
        if number < 0 or (base == 8 and number > 0o7777):
            raise ValueError
        return number
    except ValueError:
        what = "an octal mode such as 0600" if base == 8 else "a number"
        raise PybuildError(f"--mount {key}={value!r} is not {what}", reference="invalid-mount") from None


def make_mount(fields: dict[str, str], resolve_stage: Callable[[str], tuple[int, int | None]],
               ssh_index: int = 0) -> RunMount:
    """Validate fields into a RunMount; resolve_stage(name) → (stage index, its last step); ``ssh_index``: how
    many ssh mounts the RUN has before this one."""
    kind = fields.get("type", "bind")
    if kind not in MOUNT_TYPES:
        raise PybuildError(f"unsupported mount type {kind!r}", hint="use bind, cache, tmpfs, secret or ssh",
                           reference="invalid-mount")
    target = fields.get("target") or fields.get("dst") or fields.get("destination") or ""
    mount_id = fields.get("id", "")
    if kind == "ssh":
        mount_id = mount_id or "default"
        target = target or f"/run/buildkit/ssh_agent.{ssh_index}"
    env = fields.get("env", "")
    if env and kind != "secret":
        raise PybuildError(f"env= is for secret mounts, not type={kind}", reference="invalid-mount")
    if env and not _ENV_NAME.fullmatch(env):
        raise PybuildError(f"env={env!r} is not an environment variable name", reference="invalid-mount")
    if kind == "secret" and not target:
        if not mount_id:
            raise PybuildError("a secret mount needs id= or target=", reference="invalid-mount")
        if not env:  # BuildKit: with env= and no target= the secret is only the variable
            target = f"/run/secrets/{mount_id}"
    if not target and not env:
        raise PybuildError(f"--mount type={kind} needs target=", reference="invalid-mount")
    readonly = any(_truthy(fields.get(k)) for k in ("readonly", "ro") if k in fields)
    if kind == "bind":
        readonly = not any(_truthy(fields.get(k)) for k in ("rw", "readwrite") if k in fields)
    from_stage = from_step = None
    if fields.get("from"):
        if kind not in ("bind", "cache"):
            raise PybuildError(f"from= is for bind and cache mounts, not type={kind}", reference="invalid-mount")
        from_stage, from_step = resolve_stage(fields["from"])
    sharing = fields.get("sharing", "shared")
    if sharing not in ("shared", "private", "locked"):
        raise PybuildError(f"invalid sharing={sharing}", hint="shared, private or locked", reference="invalid-mount")
    return RunMount(type=kind, target=target, source=fields.get("source") or fields.get("src") or "",
                    from_stage=from_stage, from_step=from_step, id=mount_id or (target if kind == "cache" else ""),
                    sharing=sharing, mode=_number(fields, "mode", 8), uid=_number(fields, "uid", 10),
                    gid=_number(fields, "gid", 10), readonly=readonly,
                    required=_truthy(fields.get("required")) if "required" in fields else False,
                    size=fields.get("size", ""), env=env)
