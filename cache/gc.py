"""Garbage collection: mark what tags and kept cache records reach, sweep the rest.

Roots are (1) tagged images: their manifest, config and layer blobs, and every snapshot chain
whose diff_ids match the image's layers from the bottom; (2) cache records that survive the
prune policy: their snapshot and layer blob; (3) snapshots still being committed ('pending').
A kept layer also keeps the snapshot a lazily committed layer's tar is made from and the blobs
made of it in other compressions (cache.layerblob).
A kept snapshot keeps its parents (they are its lowerdirs) and its own layer blob.

Things with no reference at all (a blob put or a snapshot committed moments ago by another
process that has not yet recorded it, an untagged image about to be tagged) are only swept
when this process holds the store alone (`StoreLock.exclusive`) or when they are older than
`GRACE_SECONDS`. FIXME(leases): a blob whose last reference is being dropped while another
process re-puts it (put is a no-op when the file exists) can still be lost; BuildKit solves
this with leases, we accept the window until prune and builds share a process-wide lease.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cache.blobs import BlobStore
from cache.index import Index, SnapshotRow
from cache.model import CacheRecord, ImageRecord
from cache.snapshots import SnapshotStore

GRACE_SECONDS = 3600.0


@dataclass(slots=True)
class Plan:
    """What a prune would remove (record keys, snapshot ids, image manifests, blob digests)."""

    records: list[str] = field(default_factory=list)
    snapshots: list[int] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    bytes: int = 0


def doomed_records(records: list[CacheRecord], *, all: bool, keep_storage: int | None,
                   until: float | None, now: float) -> list[CacheRecord]:
    """Records the policy removes: older than ``until`` seconds (or every record with ``all``),
    least recently used first, stopping once the rest fits in ``keep_storage`` bytes."""
    candidates = sorted(records, key=lambda r: (r.last_used, r.key))
    if until is not None:
        candidates = [r for r in candidates if r.last_used < now - until]
    elif not all and keep_storage is None:
        return []
    if keep_storage is None:
        return candidates
    total = sum(r.size for r in records)
    out = []
    for r in candidates:
        if total <= keep_storage:
            break
        out.append(r)
        total -= r.size
    return out


def plan(index: Index, blobs: BlobStore, *, all: bool, keep_storage: int | None,
         until: float | None, alone: bool, now: float | None = None,
         doomed_keys: set[str] | None = None) -> Plan:
    """Mark from the roots and list everything unmarked (nothing is deleted here).

    All rows are read in one transaction: a record written meanwhile must not be seen
    without the snapshot it names (that would make its blob look orphaned).
    """
    now = time.time() if now is None else now
    with index.read():
        records = index.records()
        snaps = {r.id: r for r in index.snapshots()}
        images = index.all_images()
        tagged = {digest for _, digest in index.tags()}
        lazy = index.lazy_snapshots()
        variants = index.layer_blobs()
    doomed = doomed_keys if doomed_keys is not None else \
        {r.key for r in doomed_records(records, all=all, keep_storage=keep_storage, until=until, now=now)}
    result = Plan(records=sorted(doomed))
    keep_snaps, keep_blobs = _roots(records, doomed, snaps, alone, now)
    kept_layers: set[str] = set()
    for image in images:
        if image.manifest.digest not in tagged and (alone or now - image.created > GRACE_SECONDS):
            result.images.append(image.manifest.digest)
            continue
        keep_blobs.update({image.manifest.digest, image.config.digest})
        keep_blobs.update(layer.blob.digest for layer in image.layers)
        keep_snaps.update(_chains(snaps, [layer.diff_id for layer in image.layers]))
        kept_layers.update(layer.diff_id for layer in image.layers)
    kept_layers.update(r.layer.diff_id for r in records if r.layer is not None and r.key not in doomed)
    _keep_layer_sources(kept_layers, lazy, variants, keep_snaps, keep_blobs)
    _close_over_parents(snaps, keep_snaps, keep_blobs)
    result.snapshots = sorted(set(snaps) - keep_snaps)
    result.bytes += sum(snaps[i].size for i in result.snapshots)
    referenced = _referenced_blobs(records, snaps, images)
    for digest in blobs.digests():
        if digest in keep_blobs:
            continue
        try:
            st = blobs.path_for(digest).stat()
        except FileNotFoundError:
            continue
        if digest in referenced or alone or now - st.st_mtime > GRACE_SECONDS:
            result.blobs.append(digest)
            result.bytes += st.st_size
    return result


def _roots(records: list[CacheRecord], doomed: set[str], snaps: dict[int, SnapshotRow],
           alone: bool, now: float) -> tuple[set[int], set[str]]:
    """Snapshots and blobs kept directly: by surviving records, in-flight or fresh snapshots."""
    keep_snaps = {r.id for r in snaps.values() if r.state == "pending"}
    if not alone:  # just committed or imported, maybe about to be recorded by another process
        mentioned = {r.snapshot_id for r in records} | {r.parent for r in snaps.values()}
        keep_snaps.update(i for i, r in snaps.items()
                          if i not in mentioned and now - r.created < GRACE_SECONDS)
    keep_blobs: set[str] = set()
    for r in records:
        if r.key not in doomed:
            if r.snapshot_id is not None:
                keep_snaps.add(r.snapshot_id)
            if r.layer is not None:
                keep_blobs.add(r.layer.blob.digest)
    return keep_snaps, keep_blobs


def _keep_layer_sources(diff_ids: set[str], lazy: dict[str, list[int]], variants: list[tuple[str, str]],
                        keep_snaps: set[int], keep_blobs: set[str]) -> None:
    """A kept layer keeps what its blobs are made from (one snapshot of a lazy commit, cache.layerblob) and
    the blobs made of it in other compressions (made once per compression, kept with the layer)."""
    for diff_id in diff_ids:
        sources = lazy.get(diff_id, [])
        if sources and not keep_snaps.intersection(sources):  # one source is enough: the oldest
            keep_snaps.add(sources[0])
    keep_blobs.update(blob for blob, diff_id in variants if diff_id in diff_ids)


def _close_over_parents(snaps: dict[int, SnapshotRow], keep_snaps: set[int], keep_blobs: set[str]) -> None:
    """Parents of kept snapshots are their lowerdirs; kept snapshots keep their layer blobs."""
    stack = list(keep_snaps)
    while stack:
        row = snaps.get(stack.pop())
        if row is None:
            continue
        if row.layer is not None:
            keep_blobs.add(row.layer.blob.digest)
        if row.parent is not None and row.parent not in keep_snaps:
            keep_snaps.add(row.parent)
            stack.append(row.parent)


def _chains(snaps: dict[int, SnapshotRow], diff_ids: list[str]) -> set[int]:
    """Snapshot ids on any chain whose diff_ids equal ``diff_ids`` from the bottom."""
    found: set[int] = set()
    level: set[int | None] = {None}
    for diff_id in diff_ids:
        level = {r.id for r in snaps.values() if r.parent in level and r.diff_id == diff_id}
        if not level:
            break
        found.update(i for i in level if i is not None)
    return found


def _referenced_blobs(records: list[CacheRecord], snaps: dict[int, SnapshotRow],
                      images: list[ImageRecord]) -> set[str]:
    """Blobs some row mentions: once all of those rows go, the blob may go at once."""
    out = {r.layer.blob.digest for r in snaps.values() if r.layer is not None}
    out.update(r.layer.blob.digest for r in records if r.layer is not None)
    for image in images:
        out.update({image.manifest.digest, image.config.digest})
        out.update(layer.blob.digest for layer in image.layers)
    return out


def sweep(p: Plan, index: Index, blobs: BlobStore, snapshots: SnapshotStore) -> dict[str, int]:
    """Delete what ``p`` lists: records, images, then snapshots (children first), then blobs."""
    index.delete_records(p.records)
    for digest in p.images:
        index.delete_image(digest)
    for snap_id in sorted(p.snapshots, reverse=True):  # a child always has a larger id
        snapshots.delete(snap_id)
    freed = 0
    for digest in p.blobs:
        freed += blobs.delete(digest)
    return {"records": len(p.records), "snapshots": len(p.snapshots), "images": len(p.images),
            "blobs": len(p.blobs), "reclaimed": p.bytes}


def plan_within(index: Index, blobs: BlobStore, *, keep_storage: int, total: int, until: float | None,
                alone: bool) -> Plan:
    """The least-recently-used prefix of records whose removal brings the store's whole size (blobs and
    snapshots, as `usage()` counts it) under ``keep_storage``; everything removable if even that is not enough.
    Freed bytes grow with the prefix, so a binary search over its length finds the shortest one."""
    now = time.time()
    with index.read():
        tagged = {digest for _, digest in index.tags()}
        snaps = {r.id: r for r in index.snapshots()}
        held: set[int] = set()
        for image in index.all_images():
            if image.manifest.digest in tagged:
                held |= _chains(snaps, [layer.diff_id for layer in image.layers])
        records = index.records()
    # a record whose snapshot a tagged image holds frees nothing: keep it (and its cache hit) for free
    candidates = sorted((r for r in records if r.snapshot_id is None or r.snapshot_id not in held),
                        key=lambda r: (r.last_used, r.key))
    if until is not None:
        candidates = [r for r in candidates if r.last_used < now - until]

    def attempt(k: int) -> Plan:
        return plan(index, blobs, all=False, keep_storage=None, until=None, alone=alone, now=now,
                    doomed_keys={r.key for r in candidates[:k]})

    lo, hi = 0, len(candidates)
    best = attempt(hi)
    if total - best.bytes > keep_storage:
        return best
    while lo < hi:
        mid = (lo + hi) // 2
        p = attempt(mid)
        if total - p.bytes <= keep_storage:
            hi, best = mid, p
        else:
            lo = mid + 1
    return best if hi == len(candidates) else attempt(hi)
