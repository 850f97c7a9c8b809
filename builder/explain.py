"""--explain-cache: say which input of a step changed since the last build of the same step."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from builder.plan.keys import CacheKey
from builder.plan.steps import Step

if TYPE_CHECKING:
    from cache import Store


def _previous(store: Store, identity: str, instruction: str) -> dict[str, Any] | None:
    """The newest record of the same step (same identity, else the same instruction text)."""
    best = None
    for record in store.records():
        d = record.description or {}
        if d.get("identity") == identity or d.get("instruction") == instruction:
            if best is None or record.created > best[0]:
                best = (record.created, d)
    return best[1] if best else None


def _previous_base(store: Store, identity: str) -> dict[str, Any] | None:
    """The base a FROM used last time when its import was a hit on a record another step made (the same image
    reached first under another name or stage): the parent of the newest record of the next step in the stage."""
    stage = identity.rsplit("/", 2)[0]
    records = store.records()
    by_key = {record.key: record for record in records}
    best = None
    for record in records:
        parent = by_key.get(record.parent_key or "")
        if parent is None or (parent.description or {}).get("kind") != "source":
            continue
        if str((record.description or {}).get("identity", "")).rsplit("/", 2)[:2] == [stage, "1"]:
            if best is None or record.created > best[0]:
                best = (record.created, parent.description)
    return best[1] if best else None


def _changed_keys(old: list | dict, new: list | dict) -> list[str]:
    old_d, new_d = dict(map(tuple, old)) if isinstance(old, list) else old, \
        dict(map(tuple, new)) if isinstance(new, list) else new
    return sorted(k for k in set(old_d) | set(new_d) if old_d.get(k) != new_d.get(k))


def _env_names(env: list[str]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in env)


SHOWN_FILES = 10  # files named per kind of change; "and N more" after


def _files_changed(old: dict[str, str], new: dict[str, str]) -> str:
    """`changed: a, b; added: c; removed: d` (first SHOWN_FILES of each, then "and N more")."""
    kinds = (("changed", sorted(p for p in set(old) & set(new) if old[p] != new[p])),
             ("added", sorted(set(new) - set(old))), ("removed", sorted(set(old) - set(new))))
    parts = []
    for name, paths in kinds:
        if paths:
            more = f" and {len(paths) - SHOWN_FILES} more" if len(paths) > SHOWN_FILES else ""
            parts.append(f"{name}: {', '.join(paths[:SHOWN_FILES])}{more}")
    return "; ".join(parts)


def _file_reasons(previous: dict[str, Any], old: dict, new: dict, files: dict[str, str] | None) -> list[str]:
    reasons = []
    changed = _changed_keys(old.get("sources") or [], new.get("sources") or [])
    if changed:
        named = _files_changed(previous.get("files") or {}, files) if files and previous.get("files") else ""
        reasons.append("source " + ", ".join(repr(c) for c in changed) + " changed" + (f" ({named})" if named else ""))
    if old.get("from") != new.get("from"):
        reasons.append("the --from stage changed")
    if old.get("actions") != new.get("actions"):
        reasons.append("instruction changed (destination or flags)")
    return reasons


def _exec_reasons(old: dict, new: dict) -> list[str]:
    reasons = []
    if old.get("argv") != new.get("argv"):
        reasons.append("command changed")
    env = _changed_keys(_env_names(old.get("env") or []), _env_names(new.get("env") or []))
    if env:
        reasons.append("environment changed: " + ", ".join(env))
    reasons += [f"{field} changed" for field in ("cwd", "user", "network", "mounts", "hosts", "insecure")
                if old.get(field) != new.get(field)]
    return reasons


def explain_miss(store: Store, step: Step, key: CacheKey, identity: str,
                 files: dict[str, str] | None = None) -> str:
    """Every input that changed since the newest build of the same step, e.g. `command changed; cwd changed`,
    `source 'src' changed (changed: src/a.txt; added: src/b.txt)`, `base image X changed: sha256:… -> sha256:…`."""
    previous = _previous(store, identity, step.created_by)
    if previous is None and key.parts.get("op") == "source":
        previous = _previous_base(store, identity)
    if previous is None:
        return "no earlier build of this step"
    old = previous.get("inputs") or {}
    new = key.parts
    if new.get("op") == "source":
        name = step.created_by.removeprefix("FROM ")
        # the image id (plan/keys.py keys a base by it; records of older builds name its manifest)
        was, now = (old.get("image") or old.get("manifest")), (new.get("image") or new.get("manifest"))
        return f"base image {name} changed: {was} -> {now}"
    reasons = []
    if old.get("parent") != new.get("parent"):
        reasons.append("parent step changed")
    if new.get("op") == "file":
        reasons += _file_reasons(previous, old, new, files)
    elif new.get("op") == "exec":
        reasons += _exec_reasons(old, new)
    if reasons:
        return "; ".join(reasons)
    if old == new:
        return "the earlier result was pruned"
    return "inputs changed: " + ", ".join(_changed_keys(old, new))


def explain_hit(key: CacheKey, remote: str | None) -> str:
    """`cache hit: sha256:… (local cache)` or `… (remote cache type=registry,ref=…)`."""
    return f"cache hit: {key.digest[:19]} ({'remote cache ' + remote if remote else 'local cache'})"
