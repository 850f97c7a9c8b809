"""A cache repository shared by many images and branches: `type=registry,ref=HOST/REPO` with no tag.

As kaniko's --cache-repo (each cached step an image tagged with its cache key's hash), every record is a small OCI
manifest of its own, tagged with the hex of the step's key; a cache mount is one tagged `mount-<sha256 of its id>`:

    HOST/REPO:<64 hex of the key>   manifest: config = the empty JSON blob `{}` (application/vnd.oci.empty.v1+json),
                                    layers = [the step's layer] or [], annotation dev.pybuild.cache.record = the
                                    record as format.py documents it (its "layer" 0 or null)
    HOST/REPO:mount-<64 hex>        layers = [the mount's content], annotation dev.pybuild.cache.mount = its id

Two Dockerfiles whose first steps are the same compute the same keys for them, so they share those entries.
A lookup is one manifest GET (404: a miss), made only after a local miss, and never for a step whose parent missed
this repository (nobody could have exported it): a chain costs one request per hit and one for its first miss.
Keys are hostile input: a record is used only if its inputs hash to its key and that key is the one looked up.
"""
from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

from builder.errors import PybuildError
from builder.plan.imageconfig import canonical_json
from builder.remotecache.format import FormatError, RemoteRecord, _layer_json, decode, parse_json
from builder.remotecache.sources import CacheSource
from builder.remotecache.spec import CacheSpec

if TYPE_CHECKING:
    from cache import Store

RECORD = "dev.pybuild.cache.record"
MOUNT = "dev.pybuild.cache.mount"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY).hexdigest()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def key_tag(key: str) -> str:
    """The tag a record is stored under: the hex of its key (kaniko: the cache key's hash)."""
    return key.removeprefix("sha256:")


def mount_tag(mount_id: str) -> str:
    """The tag a cache mount's content is stored under."""
    return "mount-" + hashlib.sha256(mount_id.encode()).hexdigest()


def entry_manifest(layer, annotation: str, value: str) -> bytes:
    """The manifest of one keyed entry: the empty config, the layer (if any), and the record or mount id."""
    return canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": EMPTY_TYPE, "digest": EMPTY_DIGEST, "size": len(EMPTY)},
                           "layers": [] if layer is None else [_layer_json(layer)],
                           "annotations": {annotation: value}})


def record_value(key: str, parent: str | None, layer, created: float, description: dict) -> str:
    """The record annotation of one step (the per-file list of COPY sources stays local: it can be large)."""
    described = {k: v for k, v in description.items() if k != "files"}
    return canonical_json({"key": key, "parent": parent, "layer": None if layer is None else 0,
                           "created": created, "description": described}).decode()


class KeyedSource(CacheSource):
    """--cache-from type=registry,ref=HOST/REPO: records looked up one by one, by key, when a step needs them."""

    keyed = True

    def __init__(self, spec: CacheSpec, registries, warn) -> None:
        from builder.export.reference import Reference  # lazy: saves ~34 ms at start-up

        self.spec = spec
        self.ref = Reference.parse(spec.ref)
        self.domain = self.ref.domain
        self.repository: str = self.ref.repository
        self._registries = registries
        self._client = None
        self.warn = warn
        self.records: dict[str, RemoteRecord] = {}  # found so far
        self.missed: set[str] = set()  # keys looked up and not there
        self.found_mounts: dict[str, str] = {}  # cache mount id → blob digest of the content found here
        self.requests = 0
        self.broken = False  # unreachable / refused: a warning once, then no more requests
        self._lock = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            self._client = self._registries().client(self.domain, insecure=self.spec.insecure)
        return self._client

    def _get(self, tag: str) -> dict | None:
        """The manifest under ``tag`` (None: not there, or the repository cannot be used)."""
        from builder.export.registry import MAX_MANIFEST, pull_scope  # lazy: saves ~19 ms at start-up

        if self.broken:
            return None
        with self._lock:
            self.requests += 1
        try:
            resp = self.client.request("GET", f"/v2/{self.repository}/manifests/{tag}",
                                       scope=pull_scope(self.repository), missing_ok=True,
                                       headers={"Accept": OCI_MANIFEST})
            if resp is None:
                return None
            with resp:
                body = resp.read(MAX_MANIFEST + 1)
            if len(body) > MAX_MANIFEST:
                raise FormatError(f"manifest {tag[:19]} is larger than {MAX_MANIFEST} bytes")
            doc = parse_json(body, f"manifest {tag[:19]}")
            if not isinstance(doc, dict):
                raise FormatError(f"manifest {tag[:19]} is not an object")
            return doc
        except FormatError as exc:
            self.warn(f"cache {self.spec.describe()}: entry {tag[:19]} ignored: {exc}")
            return None
        except (PybuildError, OSError) as exc:
            self.broken = True
            self.warn(f"--cache-from {self.spec.describe()}: cannot use it, building without it: "
                      f"{getattr(exc, 'message', None) or exc}")
            return None

    def lookup(self, key: str) -> RemoteRecord | None:
        """The record stored for ``key`` (one request), if it is sound and really is ``key``'s."""
        doc = self._get(key_tag(key))
        found = None
        if doc is not None:
            found = self._record(doc, key)
        with self._lock:
            if found is None:
                self.missed.add(key)
            else:
                self.records[key] = found
        return found

    def _record(self, doc: dict, key: str) -> RemoteRecord | None:
        raw = doc.get("annotations")
        annotations: dict = raw if isinstance(raw, dict) else {}
        try:
            record = parse_json(str(annotations.get(RECORD, "")).encode(), f"record {key[:19]}")
            records = decode({"v": 1, "mode": "max", "records": [record]}, list(doc.get("layers") or []),
                             self.spec.describe(), self.warn)
        except (FormatError, TypeError, AttributeError) as exc:
            self.warn(f"cache {self.spec.describe()}: record {key[:19]} ignored: {exc}")
            return None
        if records and key not in records:
            self.warn(f"cache {self.spec.describe()}: record {key[:19]} ignored: it is stored under that key but "
                      f"is the record of {next(iter(records))[:19]}")
        return records.get(key)

    def mount(self, mount_id: str):
        """The Layer of cache mount ``mount_id``'s content (None: not there)."""
        from builder.remotecache.format import decode_mounts  # lazy: saves <1 ms (format is loaded by then)

        doc = self._get(mount_tag(mount_id))
        if doc is None:
            return None
        raw = doc.get("annotations")
        annotations: dict = raw if isinstance(raw, dict) else {}
        if annotations.get(MOUNT) != mount_id:
            self.warn(f"cache {self.spec.describe()}: cache mount entry {mount_tag(mount_id)[:19]} ignored: it is "
                      f"not the one of {mount_id!r}")
            return None
        mounts = decode_mounts({"mounts": [{"id": mount_id, "layer": 0}]}, list(doc.get("layers") or []),
                               self.spec.describe(), self.warn)
        if mount_id in mounts:
            self.found_mounts[mount_id] = mounts[mount_id].blob.digest
        return mounts.get(mount_id)

    def fetch(self, store: Store, layer, stop=None, progress=None) -> None:
        from builder.export.pull import _fetch_layer  # lazy: saves ~79 ms at start-up

        _fetch_layer(store, self.client, self.ref, {"digest": layer.blob.digest, "size": layer.blob.size}, stop,
                     progress)


__all__ = ["KeyedSource", "entry_manifest", "export_keyed", "key_tag", "mount_tag", "record_value"]



def _has_manifest(client, repository: str, tag: str, scope: str) -> bool:
    resp = client.request("HEAD", f"/v2/{repository}/manifests/{tag}", scope=scope, missing_ok=True,
                          headers={"Accept": OCI_MANIFEST})
    if resp is None:
        return False
    resp.close()
    return True


def export_keyed(spec: CacheSpec, store: Store, records: list[tuple], remote, registries, mounts=()):
    """Write each record (and cache mount) not yet in the repository as its own tagged entry; ExportResult.

    Known without asking: the keys this build found there (present) or looked up in vain (absent); other keys cost
    one HEAD each. Blobs go as for a push (HEAD, cross-repository mount from a --cache-from, or upload)."""
    # lazy: saves ~84 ms at start-up; exporters also imports this module (a cycle)
    from builder.export.parallel import each
    from builder.export.reference import Reference
    from builder.export.registry import push_scope
    from builder.remotecache.exporters import UPLOADS, ExportResult, blob_sender, compressed

    ref = Reference.parse(spec.ref)
    sources = [s for s in (remote.sources if remote else []) if getattr(s, "domain", None) == ref.domain]
    same = next((s for s in sources if getattr(s, "keyed", False) and s.repository == ref.repository), None)
    present = set(same.records) if same else set()
    absent = set(same.missed) if same else set()
    known = {r.layer.blob.digest for s in sources if s.repository == ref.repository
             for r in s.records.values() if r.layer is not None}
    elsewhere = {r.layer.blob.digest: s.repository for s in sources if s.repository != ref.repository
                 for r in s.records.values() if r.layer is not None}
    client = registries().client(ref.domain, insecure=spec.insecure)
    scope = push_scope(ref.repository, *sorted(set(elsewhere.values())))
    entries = [(key_tag(key), layer, entry_manifest(layer, RECORD, record_value(key, parent, layer, created, d)),
                key in present, key in absent) for key, parent, layer, created, d in compressed(spec, store, remote,
                                                                                              records)]
    found = same.found_mounts if same else {}
    entries += [(mount_tag(mount_id), layer, entry_manifest(layer, MOUNT, mount_id),
                 found.get(mount_id) == layer.blob.digest, True) for mount_id, layer in mounts]

    def needed(item, stop) -> bool:
        tag, _, _, there, missing = item
        return not there and (missing or not _has_manifest(client, ref.repository, tag, scope))

    todo = [e for e, new in zip(entries, each(entries, needed, workers=UPLOADS, name="pybuild-cache-head")) if new]
    blobs = {layer.blob.digest: layer for _, layer, _, _, _ in todo if layer is not None}
    if todo:
        blobs[store.put_blob(EMPTY).digest] = None

    send = blob_sender(store, remote, client, ref.repository, scope, known, elsewhere)
    outcomes = each(list(blobs.items()), send, workers=UPLOADS, name="pybuild-cache-push")
    each(todo, lambda item, stop: client.put_manifest(ref.repository, item[0], item[2], OCI_MANIFEST, scope),
         workers=UPLOADS, name="pybuild-cache-tag")
    return ExportResult(spec, len(entries), outcomes.count("uploaded"), outcomes.count("mounted"),
                        outcomes.count("existing"), "", not todo, written=len(todo))
