"""Remote cache hits are lazy: a hit records the remote layer in the step's result and nothing is downloaded
until a step that needs the content runs after it (`materialize`: fetch, check, unpack, record in the local
cache), or the exported image needs the blob (`fetch_layers`). A blob that fails its digest check (or a layer that
unpacks to another diff_id than its record says) is a warning and the step is rebuilt: its key is unchanged, so the
steps after it keep their hits."""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from builder.errors import PybuildError
from builder.export.parallel import each
from builder.remotecache.format import RemoteRecord

if TYPE_CHECKING:
    from builder.remotecache.sources import CacheSource
    from cache import Layer, Store

FETCHES = 3  # layers downloaded at once, as pulls


class RemoteCache:
    """The build's readable --cache-from sources: records by key, layer blobs fetched on demand."""

    def __init__(self, sources: list[CacheSource], warn) -> None:
        self.sources = sources
        self.warn = warn
        self.by_key: dict[str, tuple[RemoteRecord, CacheSource]] = {}
        self.owner: dict[str, CacheSource] = {}  # layer blob digest → the source that lists it
        for source in reversed(sources):  # the first source given wins
            for key, record in source.records.items():
                self.by_key[key] = (record, source)
                if record.layer is not None:
                    self.owner[record.layer.blob.digest] = source
        self.bad: set[str] = set()  # blobs that failed their check: never tried again in this build
        self.fetched = 0  # layer bytes downloaded
        self.tried_mounts: set[str] = set()  # cache mount ids looked for (restore once per build)
        self.mounts_found: dict = {}  # cache mount id → (Layer, source) or None
        self._lock = threading.Lock()

    def restore_mounts(self, store: Store, step) -> None:
        """Restore ``step``'s cache mounts the store lacks from the caches (builder/remotecache/mounts.py)."""
        from builder.remotecache.mounts import restore_mounts  # lazy: saves ~1 ms at start-up

        restore_mounts(self, store, step)

    def lookup(self, key: str, parent: str | None = None) -> RemoteRecord | None:
        """The record of ``key``: from a cache read at the start, else from the keyed repositories (one request
        each), never asking one of them for a step whose ``parent`` key it did not have."""
        found = self.by_key.get(key)
        if found is not None:
            return found[0]
        for source in self.sources:
            if not getattr(source, "keyed", False) or (parent is not None and parent in getattr(source, "missed", ())):
                continue
            record = source.lookup(key)
            if record is not None:
                with self._lock:
                    self.by_key[key] = (record, source)
                    if record.layer is not None:
                        self.owner.setdefault(record.layer.blob.digest, source)
                return record
        return None

    def mount(self, mount_id: str):
        """(Layer of cache mount ``mount_id``'s content, its source) from the first cache that has it, or None;
        asked once per build."""
        if mount_id in self.mounts_found:
            return self.mounts_found[mount_id]
        found = None
        for source in self.sources:
            layer = source.mount(mount_id)
            if layer is not None:
                with self._lock:
                    self.owner.setdefault(layer.blob.digest, source)
                found = (layer, source)
                break
        self.mounts_found[mount_id] = found
        return found

    def fetch(self, store: Store, layer: Layer, stop: threading.Event | None = None) -> bool:
        """Bring ``layer``'s blob into the store (checked); False, with a warning, when it cannot be had."""
        digest = layer.blob.digest
        if store.has_blob(digest):
            return True
        source = self.owner.get(digest)
        if digest in self.bad or source is None:
            return False
        try:
            source.fetch(store, layer, stop)
        except (PybuildError, OSError) as exc:
            self.bad.add(digest)
            self.warn(f"cache {source.spec.describe()}: layer {digest[:19]} cannot be used, the step is rebuilt: "
                      f"{getattr(exc, 'message', None) or exc}")
            return False
        with self._lock:
            self.fetched += layer.blob.size
        return True

    def fetch_all(self, store: Store, layers: list[Layer]) -> set[str]:
        """`fetch` side by side; the digests that could not be had."""
        unique = list({layer.blob.digest: layer for layer in layers}.values())
        ok = each(unique, lambda layer, stop: self.fetch(store, layer, stop), workers=FETCHES,
                  name="pybuild-cache-fetch") if unique else []
        return {layer.blob.digest for layer, good in zip(unique, ok) if not good}


def _lazy_chain(solver, step_id: int) -> tuple[list[int], int | None]:
    """(lazy steps from the bottom up to ``step_id``, the non-lazy step below them or None)."""
    chain = []
    sid = step_id
    while sid is not None and sid in solver.lazy:
        chain.append(sid)
        sid = solver.graph.steps[sid].parent
    return list(reversed(chain)), sid


def materialize(solver, step_id: int) -> None:
    """Give ``step_id`` and the lazy hits below it real snapshots (call with solver's lazy lock held)."""
    chain, below = _lazy_chain(solver, step_id)
    remote = solver.options.remote
    parent = solver.results[below].snapshot if below is not None else None
    failed = remote.fetch_all(solver.store, [solver.lazy[s].layer for s in chain if solver.lazy[s].layer])
    run: list[int] = []  # consecutive good layers, imported together
    for sid in chain:
        layer = solver.lazy[sid].layer
        if layer is None or layer.blob.digest not in failed:
            run.append(sid)
            continue
        parent = _install(solver, run, parent)
        run = []
        parent = _rebuild(solver, sid)
    _install(solver, run, parent)


def _install(solver, run: list[int], parent):
    """Unpack the layers of ``run`` over ``parent`` and record each step in the local cache; the top snapshot."""
    with_layers = [s for s in run if solver.lazy[s].layer is not None]
    blobs = [solver.lazy[s].layer.blob for s in with_layers]
    snaps = dict(zip(with_layers, solver.store.import_layers(parent, blobs))) if blobs else {}
    for n, sid in enumerate(run):
        record = solver.lazy[sid]
        snap = snaps.get(sid, parent)
        if record.layer is not None and snap.diff_id != record.layer.diff_id:
            solver.options.remote.warn(f"cache {record.source}: layer {record.layer.blob.digest[:19]} unpacks to "
                                       f"{snap.diff_id}, not the {record.layer.diff_id} its record says: rebuilt")
            parent = _rebuild(solver, sid)
            return _install(solver, run[n + 1:], parent)
        solver.store.record_imported(record.key, parent_key=record.parent, snapshot=snap, layer=record.layer,
                                     description=record.description, created=record.created)
        solver.results[sid] = replace(solver.results[sid], snapshot=snap)
        del solver.lazy[sid]
        parent = snap
    return parent


def _rebuild(solver, sid: int):
    """Run a step whose remote layer cannot be used (its parent is real by now); its snapshot."""
    step = solver.graph.steps[sid]
    record = solver.lazy.pop(sid)
    snapshot, layers = solver._execute(step, solver.numbers.get(sid, 0))
    layer = layers[0] if len(layers) == 1 else None
    solver.store.record_imported(record.key, parent_key=record.parent, snapshot=snapshot, layer=layer,
                                 description=record.description, created=record.created)
    solver.results[sid] = replace(solver.results[sid], snapshot=snapshot, layers=tuple(layers))
    return snapshot


def fetch_layers(solver, step_ids: list[int]) -> None:
    """Make the blobs of ``step_ids`` (an image's steps) local: fetched, or the step rebuilt if they cannot be."""
    lazy = [s for s in step_ids if s in solver.lazy and solver.lazy[s].layer is not None]
    failed = solver.options.remote.fetch_all(solver.store, [solver.lazy[s].layer for s in lazy])
    for sid in lazy:
        if sid in solver.lazy and solver.lazy[sid].layer.blob.digest in failed:  # (maybe unpacked meanwhile)
            solver.snapshot_of(sid)  # unpacks what is below and rebuilds this step


def keep_local(solver) -> None:
    """Unpack and record the lazy hits whose blobs are in the store by now (no download), so the next build on
    this store hits its own cache."""
    for sid in sorted(solver.lazy, reverse=True):
        if sid not in solver.lazy:
            continue
        chain, _ = _lazy_chain(solver, sid)
        if all(solver.lazy[s].layer is None or solver.store.has_blob(solver.lazy[s].layer.blob.digest)
               for s in chain):
            solver.snapshot_of(sid)
