"""--explain-cache: say which input of a step changed since the last build of the same step."""
from __future__ import annotations

from typing import Any

from builder.plan.keys import CacheKey
from builder.plan.steps import Step


def _previous(store, identity: str, instruction: str) -> dict[str, Any] | None:
    """The newest record of the same step (same identity, else the same instruction text)."""
    best = None
    for record in store.records():
        d = record.description or {}
        if d.get("identity") == identity or d.get("instruction") == instruction:
            if best is None or record.created > best[0]:
                best = (record.created, d)
    return best[1] if best else None


def _changed_keys(old: list | dict, new: list | dict) -> list[str]:
    old_d, new_d = dict(map(tuple, old)) if isinstance(old, list) else old, \
        dict(map(tuple, new)) if isinstance(new, list) else new
    return sorted(k for k in set(old_d) | set(new_d) if old_d.get(k) != new_d.get(k))


def _env_names(env: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in env)


def explain_miss(store, step: Step, key: CacheKey, identity: str) -> str:
    """One phrase: `parent step changed`, `source 'a.txt' changed`, `command changed`, `env LATE changed`, …"""
    previous = _previous(store, identity, step.created_by)
    if previous is None:
        return "no earlier build of this step"
    old = previous.get("inputs") or {}
    new = key.parts
    if old.get("parent") != new.get("parent"):
        return "parent step changed"
    if new.get("op") == "file":
        changed = _changed_keys(old.get("sources") or [], new.get("sources") or [])
        if changed:
            return "source " + ", ".join(repr(c) for c in changed) + " changed"
        if old.get("from") != new.get("from"):
            return "the --from stage changed"
        return "instruction changed (destination or flags)"
    if new.get("op") == "exec":
        if old.get("argv") != new.get("argv"):
            return "command changed"
        env = _changed_keys(_env_names(old.get("env") or []), _env_names(new.get("env") or []))
        if env:
            return "environment changed: " + ", ".join(env)
        for field in ("cwd", "user", "network"):
            if old.get(field) != new.get(field):
                return f"{field} changed"
    if previous.get("inputs") == new:
        return "the earlier result was pruned or --no-cache was given"
    return "inputs changed"


def explain_hit(key: CacheKey, remote: str | None) -> str:
    """`cache hit: sha256:… (local cache)` or `… (remote cache type=registry,ref=…)`."""
    return f"cache hit: {key.digest[:19]} ({'remote cache ' + remote if remote else 'local cache'})"
