"""The remote cache format: step records and their layers as one OCI artifact (`--cache-to`/`--cache-from`).

Modelled on BuildKit's remotecache v1 (cache/remotecache/v1/types/doc.go): an OCI image manifest whose config is a
small JSON document of step records and whose layers are the layer blobs those records produce, each with
containerd's `containerd.io/uncompressed` annotation (the diff_id). BuildKit's records name their inputs through a
graph of (selector, link) edges because its keys are computed by the solver from the inputs' cache keys; pybuild
keeps its own, already chained, key (builder/plan/keys.py: sha256 of the canonical JSON of the key's parts, the
parent's key among them), so a record carries that key and the parts it hashes, and a hit is the same decision
the local cache index makes (builder/solve.py looks records up by that key alone). The parts also let anyone
check a record: a record whose parts do not hash to its key, or whose parent is not the one its parts name, is
dropped with a warning (a damaged or forged record is never used). Layers are checked against their digests when
fetched.

Registry and local (OCI layout) caches::

    manifest  application/vnd.oci.image.manifest.v1+json
      config  application/vnd.pybuild.cache.config.v1+json   (the document below)
      layers  [{"mediaType": "...tar+gzip", "digest": "sha256:…", "size": 123,
                "annotations": {"containerd.io/uncompressed": "sha256:<diff_id>"}}, …]

    config document:
    {
      "v": 1,
      "mode": "max",                       # min: the exported image's steps; max: every step of every stage
      "records": [                         # sorted by key, so an unchanged cache is byte-identical
        {"key": "sha256:…",                # the step's cache key, exactly as pybuild computes it locally
         "parent": "sha256:…" | null,      # the key of the step below (null at the bottom of a FROM scratch)
         "layer": 0 | null,                # index into the manifest's layers (null: the step added no layer)
         "created": 1733500000.5,          # when the step first ran: image history and config use it
         "description": {"instruction": "RUN make", "stage": "builder", "kind": "exec",
                         "location": "Dockerfile:4:1", "identity": "builder/3/exec",
                         "inputs": {…the key's parts: sha256(canonical JSON of inputs) == key…}}}
      ],
      "mounts": [                          # only with --cache-to ...,cache-mounts=: RUN --mount=type=cache contents
        {"id": "/root/.cache/pip", "layer": 3}   # its content as a layer (restored by builder/remotecache/mounts.py)
      ]
    }

A shared cache repository (a registry ref without a tag) stores the same records one per manifest: keyed.py.

Inline cache (`--cache-to type=inline`): the same document under the key `pybuild.cache.v1` of the pushed image's
config, its `layer` indices pointing at the image manifest's layers (so only the image's own steps travel, as
BuildKit's inline cache, which is always mode=min).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from builder.plan.imageconfig import canonical_json

if TYPE_CHECKING:
    from cache import Layer

CACHE_CONFIG_TYPE = "application/vnd.pybuild.cache.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INLINE_KEY = "pybuild.cache.v1"
UNCOMPRESSED = "containerd.io/uncompressed"
FORMAT_VERSION = 1
MAX_CONFIG = 16 << 20


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """A step result found in a remote cache: its key, the layer it adds (cache.Layer or None) and where from."""

    key: str
    parent: str | None
    layer: Any  # cache.Layer | None
    created: float
    description: dict
    source: str  # the cache it came from, as `CacheSpec.describe` names it


class FormatError(ValueError):
    """A cache document that cannot be read at all."""


def _digest(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith("sha256:") and len(value) == 71


def _layer_json(layer) -> dict:
    return {"mediaType": layer.blob.media_type, "digest": layer.blob.digest, "size": layer.blob.size,
            "annotations": {UNCOMPRESSED: layer.diff_id}}


def encode(entries: list[tuple[str, str | None, Any, float, dict]], mode: str,
           layers: list | None = None, mounts: Sequence[tuple[str, Any]] = ()) -> tuple[dict, list]:
    """(config document, layers) for (key, parent, layer, created, description) entries; ``layers`` fixes the
    order of known layers (inline: the image's), others are appended in record order; ``mounts`` are
    (cache mount id, Layer of its content), listed under "mounts" after the records' layers."""
    order = list(layers or [])
    index = {layer.blob.digest: n for n, layer in enumerate(order)}
    records = []
    for key, parent, layer, created, description in sorted(entries, key=lambda e: e[0]):
        if layer is not None and layer.blob.digest not in index:
            index[layer.blob.digest] = len(order)
            order.append(layer)
        records.append({"key": key, "parent": parent, "layer": None if layer is None else index[layer.blob.digest],
                        "created": created, "description": description})
    doc: dict[str, Any] = {"v": FORMAT_VERSION, "mode": mode, "records": records}
    if mounts:
        doc["mounts"] = []
        for mount_id, layer in sorted(mounts, key=lambda m: m[0]):
            if layer.blob.digest not in index:
                index[layer.blob.digest] = len(order)
                order.append(layer)
            doc["mounts"].append({"id": mount_id, "layer": index[layer.blob.digest]})
    return doc, order


def artifact(doc: dict, layers: list) -> tuple[bytes, bytes]:
    """(config bytes, manifest bytes) of a registry or local cache."""
    config = canonical_json(doc)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CACHE_CONFIG_TYPE, "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                           "size": len(config)},
                "layers": [_layer_json(layer) for layer in layers]}
    return config, canonical_json(manifest)


def record_problem(record: dict, n_layers: int) -> str | None:
    """Why a record must not be used (None: it is sound)."""
    key = record.get("key")
    description = record.get("description")
    if not _digest(key) or not isinstance(description, dict) or not isinstance(description.get("inputs"), dict):
        return "it has no key or no inputs"
    inputs = description["inputs"]
    if "sha256:" + hashlib.sha256(canonical_json(inputs)).hexdigest() != key:
        return "its key does not match its inputs"
    if inputs.get("op") == "source" and record.get("layer") is not None:
        return "a base image step has no layer of its own"
    if inputs.get("parent") != record.get("parent"):
        return "its parent does not match its inputs"
    layer = record.get("layer")
    if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n_layers):
        return "its layer is not in the manifest"
    if not isinstance(record.get("created"), (int, float)):
        return "it has no creation time"
    return None


def decode(doc: Any, layer_descs: list, source: str, warn) -> dict[str, RemoteRecord]:
    """key → RemoteRecord from a config document and the manifest's layer descriptors; unsound records are
    dropped with a warning. Raises FormatError when the document is not a cache at all."""
    if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION or not isinstance(doc.get("records"), list):
        raise FormatError(f"not a pybuild cache document (version {doc.get('v') if isinstance(doc, dict) else '?'})")
    layers = _layers(layer_descs)
    found: dict[str, RemoteRecord] = {}
    for record in doc["records"]:
        problem = record_problem(record, len(layers)) if isinstance(record, dict) else "it is not an object"
        if problem is None and record["layer"] is not None and layers[record["layer"]] is None:
            problem = "its layer has no digest or diff_id"
        if problem is not None:
            key = record.get("key") if isinstance(record, dict) else None
            warn(f"cache {source}: record {str(key)[:19]} ignored: {problem}")
            continue
        layer = None if record["layer"] is None else layers[record["layer"]]
        found[record["key"]] = RemoteRecord(record["key"], record["parent"], layer, float(record["created"]),
                                            record["description"], source)
    return found


def _layers(layer_descs: list) -> list[Layer | None]:
    """cache.Layer per manifest layer descriptor; None for one without a sound digest, size or diff_id."""
    from cache import Descriptor, Layer  # lazy: saves ~35 ms at start-up

    layers: list[Layer | None] = []
    for desc in layer_descs:
        try:
            diff_id = (desc.get("annotations") or {}).get(UNCOMPRESSED)
            if not _digest(diff_id) or not _digest(desc.get("digest")) or int(desc["size"]) < 0:
                raise ValueError("digest or diff_id missing")
            layers.append(Layer(diff_id, Descriptor(str(desc.get("mediaType", "")), desc["digest"], int(desc["size"]))))
        except (AttributeError, KeyError, TypeError, ValueError):
            layers.append(None)
    return layers


def decode_mounts(doc: Any, layer_descs: list, source: str, warn) -> dict[str, Any]:
    """cache mount id → cache.Layer of its content from a document's "mounts"; unsound entries are warned about."""
    entries = doc.get("mounts") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return {}
    layers = _layers(layer_descs)
    found: dict[str, Any] = {}
    for entry in entries:
        mount_id = entry.get("id") if isinstance(entry, dict) else None
        n = entry.get("layer") if isinstance(entry, dict) else None
        if not isinstance(mount_id, str) or not mount_id or not isinstance(n, int) or isinstance(n, bool) \
                or not 0 <= n < len(layers) or layers[n] is None:
            warn(f"cache {source}: cache mount entry {str(mount_id)[:60]!r} ignored: it names no sound layer")
            continue
        found[mount_id] = layers[n]
    return found


def parse_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: a hostile document nested ~100k deep
        raise FormatError(f"{what} is not JSON: {exc}") from None
