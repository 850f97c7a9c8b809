"""`pybuild cache ls` (sorted, filtered, sizes labelled) and `pybuild cache du [--verbose]`."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable

from builder.errors import UsageError

if TYPE_CHECKING:
    from cache import Store

SORTS: dict[str, Callable[[dict[str, Any]], float]] = {
    "size": lambda r: -r["size"], "used": lambda r: -r["last_used"], "created": lambda r: -r["created"]}
FILTERS = ("image", "stage", "type")
TYPES = ("exec", "file", "source", "merge", "cache-mount")  # a record's step kind, or a RUN cache mount
SIZE_NOTE = ("UNPACKED: the step's snapshot (its files on disk, unpacked); COMPRESSED: its layer blob as stored; "
             "SIZE in --format json is both")


def parse_filters(items: list[str]) -> list[tuple[str, str]]:
    """--filter image=REF|stage=NAME|type=KIND, each KEY=VALUE; all must match (AND)."""
    found: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if key not in FILTERS or not sep or not value:
            raise UsageError(f"invalid filter {item!r}", hint="use --filter image=NAME[:TAG], stage=NAME or "
                                                              f"type={'|'.join(TYPES)} (repeat it: all must match)")
        if key == "type" and value not in (*TYPES, "cachemount"):
            raise UsageError(f"unknown record type {value!r}", hint=f"types: {', '.join(TYPES)}")
        found.append((key, "cache-mount" if value == "cachemount" else value))
    return found


def rows(store: Store, in_use: set[str], mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every cache record and cache mount as `cache ls --format json` shows it."""
    found: list[dict[str, Any]] = []
    for rec in store.records():
        d = rec.description or {}
        compressed = rec.layer.blob.size if rec.layer else 0
        found.append({"id": rec.key, "instruction": d.get("instruction", ""), "stage": d.get("stage", ""),
                      "type": d.get("kind", ""), "size": rec.size, "unpacked_size": rec.size - compressed,
                      "compressed_size": compressed, "created": rec.created, "last_used": rec.last_used,
                      "uses": rec.uses, "in_use": bool(rec.layer and rec.layer.blob.digest in in_use),
                      "diff_id": rec.layer.diff_id if rec.layer else None, "parent": rec.parent_key})
    for m in mounts:
        found.append(dict(m, unpacked_size=m["size"], compressed_size=0, diff_id=None, parent=None))
    return found


def select(store: Store, found: list[dict[str, Any]], filters: list[tuple[str, str]],
           sort: str | None) -> list[dict[str, Any]]:
    """The rows every filter matches, in ``sort`` order (largest, last used or newest first)."""
    for key, value in filters:
        if key == "image":
            layers = _image_layers(store, value)
            found = [r for r in found if r["diff_id"] in layers]
        elif key == "stage":
            found = [r for r in found if str(r["stage"]) == value]
        else:
            found = [r for r in found if r["type"] == value]
    return sorted(found, key=SORTS[sort]) if sort else found


def _image_layers(store: Store, name: str) -> set[str]:
    from builder.plan.bases import normalize_name  # lazy: saves ~70 ms at start-up

    record = store.resolve(normalize_name(name))
    if record is None:
        raise UsageError(f"no image {name!r} in the store", hint="see `pybuild images`")
    return {layer.diff_id for layer in record.layers}


def du_verbose(found: list[dict[str, Any]], human: Callable[[int], str], ago: Callable[[float], str]) -> str:
    """`cache du --verbose`: one block per record (buildx du --verbose's fields), then the totals."""
    blocks = []
    for r in found:
        lines = [("ID", r["id"]), ("Parent", r["parent"] or "-"), ("Type", r["type"]),
                 ("Description", f"[{r['stage']}] {r['instruction']}" if r["stage"] != "" else r["instruction"]),
                 ("Unpacked", human(r["unpacked_size"])), ("Compressed", human(r["compressed_size"])),
                 ("Created at", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))),
                 ("Last used", ago(r["last_used"])), ("Usage count", str(r["uses"])),
                 ("In use", "yes" if r["in_use"] else "no")]
        blocks.append("\n".join(f"{k + ':':<13} {v}" for k, v in lines))
    return "\n\n".join(blocks)


def to_json(found: list[dict[str, Any]]) -> str:
    return json.dumps([{k: v for k, v in r.items() if k not in ("diff_id", "parent")} | {"parent": r["parent"]}
                       for r in found], indent=2)
