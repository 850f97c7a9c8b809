"""One build's remote caches, from the flags to the last upload: `CacheSession` is what build.py talks to.

Before the solve it reads the --cache-from caches (`remote`); after it, it makes the image's layers local unless
the image only goes to a registry that can mount them from the cache (`image`), adds an inline cache to the
image's config (`inline`), and writes every --cache-to (`export`): a failure there fails the build unless
`ignore-error=true`, as buildx; a --cache-from failure is only ever a warning.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, cast

from builder.errors import PybuildError

if TYPE_CHECKING:
    from builder.remotecache.lazy import RemoteCache
    from cache import ImageRecord, Layer, Store

# The cache's format, specs and sources are imported where a --cache-from/--cache-to needs them: every build makes
# a CacheSession, and a fully cached one without remote caches should not pay for them (~12 ms, -X importtime).


def _default_warn(text: str) -> None:
    from builder.remotecache.sources import default_warn  # lazy: saves ~30 ms at start-up

    default_warn(text)


class CacheSession:
    """--cache-from / --cache-to of one build (specs checked at construction: a bad one fails before building)."""

    def __init__(self, cache_from: list[str], cache_to: list[str], warn=None) -> None:
        if cache_from or cache_to:
            from builder.remotecache.spec import parse_cache_spec  # lazy: saves ~10 ms at start-up
        self.cache_from = [parse_cache_spec(s, export=False) for s in cache_from]
        self.cache_to = [parse_cache_spec(s, export=True) for s in cache_to]
        self.warn = warn or _default_warn
        self.lazy_remote: RemoteCache | None = None  # once opened
        self.stored = True  # False: the image went only to registries, its layers never downloaded
        self.results: list = []  # ExportResult per --cache-to written

    def remote(self, registries):
        """The RemoteCache of the readable --cache-from caches (None without any)."""
        if not self.cache_from:
            return None
        # lazy: saves ~65 ms at start-up
        from builder.remotecache.lazy import RemoteCache
        from builder.remotecache.sources import open_sources

        self.lazy_remote = RemoteCache(open_sources(self.cache_from, registries, self.warn), self.warn)
        return self.lazy_remote

    def inline(self, solver, target: int, built: tuple) -> tuple:
        """(config, manifest, layers) with the image's step records in its config for --cache-to type=inline."""
        if not any(s.type == "inline" for s in self.cache_to):
            return built
        # lazy: saves ~101 ms at start-up
        from builder.export.image import layers_manifest
        from builder.plan.imageconfig import canonical_json
        from builder.remotecache.exporters import entries
        from builder.remotecache.format import INLINE_KEY, encode

        from builder.export.image import exportable_layers

        config, _, layers = built  # the config names the layers' blobs: lazily committed ones are compressed now
        layers = exportable_layers(solver.store, layers, solver.options.compression, solver.cancel.is_set)
        digests = {layer.blob.digest for layer in layers}
        made = {layer.diff_id: layer for layer in layers}  # the records name the blobs the image has
        records = [(k, p, made.get(l.diff_id, l) if l is not None else None, c, d)
                   for k, p, l, c, d in entries(solver, "min", target)]
        records = [e for e in records if e[2] is None or e[2].blob.digest in digests]
        doc, _ = encode(records, "min", list(layers))
        config = canonical_json({**json.loads(config), INLINE_KEY: doc})
        return config, layers_manifest(config, list(layers)), layers

    def image(self, solver, target: int, outputs: list, tags: tuple) -> None:
        """Fetch the image's lazily hit layers, unless every output is a push to a registry holding them."""
        if not solver.lazy:
            return
        # lazy: saves ~100 ms at start-up
        from builder.export.reference import Reference
        from builder.remotecache.lazy import fetch_layers

        chain, sid = [], solver.graph.stages[target].last_step
        while sid is not None:
            chain.append(sid)
            sid = solver.graph.steps[sid].parent
        assert self.lazy_remote is not None  # lazy hits come from it
        domains = {s.domain for s in self.lazy_remote.sources if getattr(s, "domain", None)}
        names = [n for o in outputs for n in (o.names or tags)]
        push_only = bool(outputs) and all(o.type == "registry" for o in outputs) and bool(names) and all(
            Reference.parse(n).domain in domains for n in names)
        if not push_only:
            fetch_layers(solver, chain)

    def put_image(self, store: Store, solver, config: bytes, manifest: bytes, layers: list[Layer],
                  names: tuple) -> ImageRecord:
        """Record the image in the store; when its layers stayed in the cache's registry (push-only builds), only
        its manifest and config are kept and the record is not tagged (the layers are mounted at push)."""
        if all(store.has_layer(layer) for layer in layers):  # a blob, or a lazily committed layer's snapshot
            if solver.lazy:
                from builder.remotecache.lazy import keep_local  # lazy: saves ~62 ms at start-up

                keep_local(solver)
            return store.put_image(manifest, config, layers)
        # lazy: saves ~51 ms at start-up
        from cache import ImageRecord
        from cache.model import MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST
        from dataclasses import replace

        self.stored = False
        self.warn(f"the image is pushed but not stored locally: {sum(not store.has_layer(l) for l in layers)}"
                  " of its layers stay in the registry cache (add --output type=image to keep it here)")
        config_desc = replace(store.put_blob(config), media_type=MEDIA_TYPE_OCI_CONFIG)
        manifest_desc = replace(store.put_blob(manifest), media_type=MEDIA_TYPE_OCI_MANIFEST)
        return ImageRecord(manifest_desc, config_desc, tuple(layers), time.time())

    def premount(self, record: ImageRecord, names: tuple, registries) -> None:
        """Mount the image's missing layers into each pushed repository from the cache repository listing them
        (so push finds them there and nothing is downloaded)."""
        # lazy: saves ~120 ms at start-up
        from builder.export.parallel import each
        from builder.export.reference import Reference
        from builder.export.registry import push_scope

        remote = self.lazy_remote
        assert remote is not None  # the image is not stored: its layers stayed in this remote cache
        for name in names:
            ref = Reference.parse(name)
            todo = [(l, remote.owner[l.blob.digest]) for l in record.layers if l.blob.digest in remote.owner
                    and getattr(remote.owner[l.blob.digest], "domain", None) == ref.domain]
            client = registries().client(ref.domain)
            scope = push_scope(ref.repository, *{s.repository for _, s in todo if s.repository})  # registry sources

            def mount(item, stop) -> None:
                layer, source = item
                if source.repository != ref.repository:
                    client.mount_blob(ref.repository, layer.blob.digest, source.repository, scope)
            each(todo, mount, workers=3, name="pybuild-cache-mount")

    def store_view(self, store: Store) -> Store:
        """The store as push/export read it: a blob still in a remote cache is fetched when it is read."""
        if self.lazy_remote is None:
            return store
        return cast("Store", _FetchingStore(store, self.lazy_remote))  # a Store: what it lacks, it delegates

    def export(self, store: Store, solver, target: int, registries) -> None:
        """Write every --cache-to but inline (done by `inline`); failures raise unless ignore-error=true."""
        if not any(spec.type != "inline" for spec in self.cache_to):
            return
        # lazy: saves ~62 ms at start-up
        from builder.remotecache.exporters import entries, export_local, export_registry
        from builder.remotecache.keyed import export_keyed
        from builder.remotecache.mounts import export_layers

        for spec in self.cache_to:
            if spec.type == "inline":
                continue
            try:
                records = entries(solver, spec.mode, target)
                mounts = export_layers(spec, store, solver.graph, self.warn, self.lazy_remote)
                if spec.type == "local":
                    self.results.append(export_local(spec, store, records, self.lazy_remote, mounts))
                elif spec.keyed:
                    self.results.append(export_keyed(spec, store, records, self.lazy_remote, registries, mounts))
                else:
                    self.results.append(export_registry(spec, store, records, self.lazy_remote, registries,
                                                        mounts))
            except (PybuildError, OSError) as exc:
                message = getattr(exc, "message", None) or str(exc)
                if not spec.ignore_error:
                    raise PybuildError(f"--cache-to {spec.describe()}: {message}", reference="cache-export-failed",
                                       hint="add ignore-error=true to the --cache-to to build anyway") from exc
                self.warn(f"--cache-to {spec.describe()} failed (ignore-error=true): {message}")


class _FetchingStore:
    """A store whose `blob_path` first fetches a blob that only a remote cache has (checked against its digest)."""

    def __init__(self, store: Store, remote: RemoteCache) -> None:
        self._store = store
        self._remote = remote

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def blob_path(self, digest: str):
        source_layer = next((r.layer for r, _ in self._remote.by_key.values()
                             if r.layer is not None and r.layer.blob.digest == digest), None)
        if not self._store.has_blob(digest) and source_layer is not None:
            self._remote.fetch(self._store, source_layer)
        return self._store.blob_path(digest)


__all__ = ["CacheSession"]
