"""Cache keys: sha256 of canonical JSON, chained to the parent step's key (STYLE.md habit 4).

Volatile inputs are left out on purpose: timestamps, the context's location on disk and file mtimes (a `touch`
must not invalidate a COPY), the hostname and the store path. Each key keeps its `parts` so `cache inspect` and
`--explain-cache` can say which input changed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from builder.plan.imageconfig import canonical_json
from builder.plan.steps import ExecOp, FileOp, MergeOp, SourceOp, Step

KEY_VERSION = 1


@dataclass(frozen=True, slots=True)
class CacheKey:
    """A step's cache key: the digest, and the parts it hashes (shown by --explain-cache and `cache inspect`)."""

    digest: str
    parts: dict[str, Any]


def make_key(parts: dict[str, Any], epoch: int | None = None) -> CacheKey:
    """The key of ``parts``; ``epoch`` (SOURCE_DATE_EPOCH) enters every key but a source's."""
    if epoch is not None and parts.get("op") != "source":  # clamped mtimes make other layer bytes: another result
        parts = {**parts, "source_date_epoch": str(epoch)}
    doc = {"v": KEY_VERSION, **parts}
    return CacheKey("sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest(), doc)


def step_key(step: Step, parent_key: str | None, *, sources: dict[str, str] | None = None,
             from_key: str | None = None, mounts: list | None = None, hosts: list | None = None,
             epoch: int | None = None) -> CacheKey:
    """The key of a step given its parent's key and, for file steps, the content checksums of its sources."""
    op = step.op
    if isinstance(op, SourceOp):
        if op.image_id:  # the same image whatever its layers' compression (a lazily built one, or the same pulled)
            return make_key({"op": "source", "image": op.image_id}, epoch)
        return make_key({"op": "source", "manifest": op.manifest_digest}, epoch)
    if isinstance(op, ExecOp):
        parts: dict[str, Any] = {"op": "exec", "parent": parent_key, "argv": list(op.argv), "env": list(op.env),
                 "cwd": op.cwd, "user": op.user, "network": op.network}
        if mounts:  # cache-mount contents and secret values never enter a key (BuildKit's CacheMap)
            parts["mounts"] = mounts
        if op.insecure:  # only when set: the keys of other RUNs stay as they were
            parts["insecure"] = True
        if hosts:  # --add-host: the names, not the addresses (BuildKit's CacheMap clears ExtraHosts' IPs)
            parts["hosts"] = hosts
        return make_key(parts, epoch)
    if isinstance(op, MergeOp):  # the linked layer's key, whatever the parent held when it was made
        return make_key({"op": "merge", "parent": parent_key, "layer": from_key}, epoch)
    assert isinstance(op, FileOp)
    return make_key({"op": "file", "parent": parent_key, "actions": [a.to_json() for a in op.actions],
                     "sources": sorted((sources or {}).items()), "from": from_key}, epoch)
