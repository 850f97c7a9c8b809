"""`--cache-to`: write the build's step records and their layers to a registry or an OCI layout directory.

Only what is needed moves, side by side: a blob the target already has (listed by the cache imported from the same
place, or answered by one HEAD) is not sent; a blob of a --cache-from in another repository of the same registry
is mounted, not downloaded and uploaded; a lazily hit layer is fetched only when it must be uploaded elsewhere. A
cache whose manifest is the one imported from the same ref costs nothing; otherwise one manifest PUT.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import TYPE_CHECKING

from builder.errors import PybuildError
from builder.export.parallel import each
from builder.remotecache.format import OCI_MANIFEST, artifact, encode
from builder.remotecache.spec import CacheSpec

if TYPE_CHECKING:
    from builder.remotecache.lazy import RemoteCache
    from cache import Layer, Store

UPLOADS = 3  # blobs sent at once, as pushes


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one --cache-to did: records written, blobs sent / mounted / already there, and the manifest."""

    spec: CacheSpec
    records: int
    uploaded: int
    mounted: int
    existing: int
    manifest: str  # "" for a keyed repository (an entry per record)
    unchanged: bool
    written: int = -1  # keyed repository: the entries it did not have yet

    def summary(self) -> str:
        what = "unchanged" if self.unchanged else (f"{self.uploaded} blobs uploaded, {self.mounted} mounted, "
                                                   f"{self.existing} already there")
        if not self.manifest:
            return f"{self.spec.describe()} ({self.records} entries, {max(self.written, 0)} new; {what})"
        return f"{self.spec.describe()}@{self.manifest[:19]} ({self.records} records; {what})"


def entries(solver, mode: str, target: int) -> list[tuple]:
    """(key, parent key, layer, created, description) of the steps ``mode`` exports: min = the chain of the
    target stage's image, max = every solved step. A base image step is a record without a layer (FROM finds the
    image itself; the record only says that it was used)."""
    graph = solver.graph
    if mode == "max":
        ids = sorted(solver.results)
    else:
        ids, sid = [], graph.stages[target].last_step
        while sid is not None:
            ids.append(sid)
            sid = graph.steps[sid].parent
    out = []
    for sid in ids:
        step, result = graph.steps[sid], solver.results[sid]
        parent = solver.results[step.parent].key.digest if step.parent is not None else None
        layer = result.layers[0] if len(result.layers) == 1 and step.kind != "source" else None
        description = solver.lazy[sid].description if sid in solver.lazy else solver.describe(step, result.key)
        out.append((result.key.digest, parent, layer, result.created, description))
    return out


def _ensure_local(store: Store, remote: RemoteCache | None, layer: Layer) -> None:
    if not store.has_layer(layer) and (remote is None or not remote.fetch(store, layer)):
        raise PybuildError(f"layer {layer.blob.digest} is neither in the store nor in a readable --cache-from")


def compressed(spec: CacheSpec, store: Store, remote: RemoteCache | None, records: list[tuple]) -> list[tuple]:
    """``records`` with their layers in ``spec.compression`` (re-compressed once, as the store keeps variants)."""
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    from cache.model import MEDIA_TYPE_LAYER_TAR, media_type_for

    wanted = media_type_for(spec.compression) if spec.compression else None
    out = []
    for key, parent, layer, created, description in records:
        lazy = layer is not None and layer.blob.media_type == MEDIA_TYPE_LAYER_TAR  # committed lazily: no blob yet
        if layer is not None and (lazy or (wanted is not None and layer.blob.media_type != wanted)):
            _ensure_local(store, remote, layer)
            layer = store.layer_blob(layer, spec.compression or "gzip")
        out.append((key, parent, layer, created, description))
    return out


def export_registry(spec: CacheSpec, store: Store, records: list[tuple], remote, registries, mounts=()) -> ExportResult:
    """Push the records (and ``mounts``: (cache mount id, Layer)) as an OCI artifact to ``spec.ref``; raises
    RegistryError/PybuildError."""
    # lazy: saves ~66 ms at start-up
    from builder.export.reference import Reference
    from builder.export.registry import push_scope

    ref = Reference.parse(spec.ref)
    doc, layers = encode(compressed(spec, store, remote, records), spec.mode, mounts=list(mounts))
    config, manifest = artifact(doc, layers)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    sources = [s for s in (remote.sources if remote else []) if getattr(s, "domain", None) == ref.domain]
    same = [s for s in sources if s.repository == ref.repository]
    if any(s.manifest_digest == digest and s.ref.reference == ref.reference for s in same):
        return ExportResult(spec, len(records), 0, 0, 0, digest, True)
    known = {r.layer.blob.digest for s in same for r in s.records.values() if r.layer is not None}
    mounts = {d: s.repository for s in sources if s.repository != ref.repository
              for r in s.records.values() if r.layer is not None for d in [r.layer.blob.digest]}
    client = registries().client(ref.domain, insecure=spec.insecure)
    scope = push_scope(ref.repository, *sorted(set(mounts.values())))
    config_desc = store.put_blob(config)

    send = blob_sender(store, remote, client, ref.repository, scope, known, mounts)
    items = [(layer.blob.digest, layer) for layer in layers] + [(config_desc.digest, None)]
    outcomes = each(items, send, workers=UPLOADS, name="pybuild-cache-push")
    client.put_manifest(ref.repository, ref.reference, manifest, OCI_MANIFEST, scope)
    return ExportResult(spec, len(records), outcomes.count("uploaded"), outcomes.count("mounted"),
                        outcomes.count("existing"), digest, False)


def _write_atomic(path: Path, write) -> None:
    """A reader sees the old file or the new one (builder/export/atomic.py)."""
    from builder.export.atomic import atomic_file  # lazy: saves ~3 ms at start-up

    with atomic_file(path) as out:
        write(out)


def blob_sender(store: Store, remote: RemoteCache | None, client, repository: str, scope: str, known: set[str],
                elsewhere: dict[str, str]):
    """The upload of one (digest, Layer | None) to ``repository`` for `parallel.each`: "existing" when the registry
    has it (or ``known`` says so), "mounted" from another repository of ``elsewhere``, else "uploaded"."""
    def send(item, stop) -> str:
        digest, layer = item
        if digest in known or client.has_blob(repository, digest, scope):
            return "existing"
        location = None
        if digest in elsewhere:
            location = client.mount_blob(repository, digest, elsewhere[digest], scope)
            if location is None:
                return "mounted"
        if layer is not None:
            _ensure_local(store, remote, layer)
        client.upload_blob(repository, digest, store.blob_path(digest), scope, location)
        return "uploaded"
    return send


def export_local(spec: CacheSpec, store: Store, records: list[tuple], remote: RemoteCache | None, mounts=()) -> ExportResult:
    """Write the records as an OCI layout at ``spec.path``: blobs first, index.json last (renamed in place)."""
    import shutil  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    root = Path(spec.path)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    doc, layers = encode(compressed(spec, store, remote, records), spec.mode, mounts=list(mounts))
    config, manifest = artifact(doc, layers)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    items = [(layer.blob.digest, layer, None) for layer in layers] + \
        [(hashlib.sha256(data).hexdigest(), None, data) for data in (config, manifest)]

    def copy(item, stop) -> str:
        name, layer, data = item
        target = blobs / name.removeprefix("sha256:")
        size = len(data) if data is not None else layer.blob.size
        if target.is_file() and target.stat().st_size == size:
            return "existing"
        if data is not None:
            _write_atomic(target, lambda out: out.write(data))
            return "uploaded"
        _ensure_local(store, remote, layer)
        with open(store.blob_path(layer.blob.digest), "rb") as src:
            _write_atomic(target, lambda out: shutil.copyfileobj(src, out, 1 << 20))
        return "uploaded"

    outcomes = each(items, copy, workers=UPLOADS, name="pybuild-cache-local")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    layout = root / "oci-layout"
    if not layout.is_file():
        _write_atomic(layout, lambda out: out.write(b'{"imageLayoutVersion":"1.0.0"}'))
    unchanged = (root / "index.json").is_file() and json.loads((root / "index.json").read_text()) == index
    if not unchanged:
        _write_atomic(root / "index.json", lambda out: out.write(json.dumps(index, indent=2).encode()))
    return ExportResult(spec, len(records), outcomes.count("uploaded"), 0, outcomes.count("existing"), digest,
                        unchanged)
