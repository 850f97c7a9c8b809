"""`--cache-from`: read a cache's records (one manifest and one config download) and fetch its layers on demand.

A source that cannot be read (unreachable, 401, missing ref, damaged document) is a warning and no records: the
build goes on without it. Every blob is checked against its digest while it streams into the store (pull.py's
VerifiedStream), so a tampered layer can never reach an image; the caller rebuilds the step instead.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import PybuildError
from builder.remotecache.format import (
    CACHE_CONFIG_TYPE,
    INLINE_KEY,
    MAX_CONFIG,
    UNCOMPRESSED,
    FormatError,
    RemoteRecord,
    decode,
    decode_mounts,
    parse_json,
)
from builder.remotecache.spec import CacheSpec

if TYPE_CHECKING:
    from cache import Layer, Store

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


class CacheSource:
    """One --cache-from: its records by key; `fetch` brings a layer blob into the store, verified."""

    spec: CacheSpec
    records: dict[str, RemoteRecord]
    manifest_digest: str | None = None
    domain: str | None = None  # registry sources: where a blob can be mounted from
    repository: str | None = None
    mounts: dict = {}  # RUN --mount=type=cache id → cache.Layer of its content (--cache-to ...,cache-mounts=)

    def lookup(self, key: str) -> RemoteRecord | None:
        """A record not among ``records`` (only a keyed repository looks records up one by one)."""
        return None

    def mount(self, mount_id: str):
        """The Layer of cache mount ``mount_id``'s content, or None."""
        return self.mounts.get(mount_id)

    def fetch(self, store: Store, layer: Layer, stop: threading.Event | None = None, progress=None) -> None:
        """Store ``layer``'s blob, checked against its digest; raises PybuildError."""
        raise NotImplementedError


def _inline_layers(doc: dict, config: dict) -> list:
    """The image manifest's layers with their diff_ids from the config, as a cache manifest would list them."""
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers = doc.get("layers") or []
    if len(diff_ids) != len(layers):
        raise FormatError("the image's manifest and config disagree on its layers")
    return [{**desc, "annotations": {UNCOMPRESSED: diff_id}} for desc, diff_id in zip(layers, diff_ids)]


def _records(manifest: dict, config_bytes: bytes, source: str, warn) -> tuple[dict[str, RemoteRecord], dict]:
    """(records by key, cache mount layers by id) of a cache manifest and its config (or an inline cache)."""
    config = parse_json(config_bytes, "the cache config")
    if (manifest.get("config") or {}).get("mediaType") == CACHE_CONFIG_TYPE:
        layers = manifest.get("layers") or []
        return decode(config, layers, source, warn), decode_mounts(config, layers, source, warn)
    if not isinstance(config, dict) or INLINE_KEY not in config:
        raise FormatError("it is an image without an inline cache (build it with --cache-to type=inline)")
    return decode(config[INLINE_KEY], _inline_layers(manifest, config), source, warn), {}


class RegistrySource(CacheSource):
    """A cache (or an image with an inline cache) in a registry."""

    def __init__(self, spec: CacheSpec, registries, warn) -> None:
        # lazy: saves ~94 ms at start-up
        from builder.export.pull import _fetch_config, _get_manifest, choose_platform, host_platform
        from builder.export.reference import Reference

        self.spec = spec
        self.ref = Reference.parse(spec.ref)
        self.domain, self.repository = self.ref.domain, self.ref.repository
        self.client = registries().client(self.ref.domain, insecure=spec.insecure)
        body, doc, kind = _get_manifest(self.client, self.ref, self.ref.reference)
        if kind in (OCI_INDEX, DOCKER_LIST):
            entry = choose_platform(doc, host_platform())
            body, doc, kind = _get_manifest(self.client, self.ref, entry["digest"])
        self.manifest_digest = "sha256:" + hashlib.sha256(body).hexdigest()
        config_desc = doc.get("config") or {}
        if int(config_desc.get("size", 0)) > MAX_CONFIG:
            raise FormatError(f"its config is larger than {MAX_CONFIG} bytes")
        self.records, self.mounts = _records(doc, _fetch_config(self.client, self.ref, config_desc),
                                             spec.describe(), warn)

    def fetch(self, store: Store, layer: Layer, stop=None, progress=None) -> None:
        from builder.export.pull import _fetch_layer  # lazy: saves ~102 ms at start-up

        _fetch_layer(store, self.client, self.ref, {"digest": layer.blob.digest, "size": layer.blob.size}, stop,
                     progress)


class LocalSource(CacheSource):
    """A cache written by `--cache-to type=local,dest=DIR`: an OCI layout directory."""

    def __init__(self, spec: CacheSpec, warn) -> None:
        self.spec = spec
        self.root = Path(spec.path)
        index = parse_json(self._read_small(self.root / "index.json"), "index.json")
        manifests = index.get("manifests") if isinstance(index, dict) else None
        if not manifests:
            raise FormatError("index.json lists no manifest")
        desc = manifests[-1]
        body = self._blob_bytes(desc["digest"], int(desc["size"]))
        self.manifest_digest = desc["digest"]
        doc = parse_json(body, "the cache manifest")
        config = doc.get("config") or {}
        self.records, self.mounts = _records(doc, self._blob_bytes(config["digest"], int(config["size"])),
                                             spec.describe(), warn)

    def _read_small(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG + 1)
        if len(data) > MAX_CONFIG:
            raise FormatError(f"{path} is larger than {MAX_CONFIG} bytes")
        return data

    def _path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise FormatError(f"invalid digest {digest!r}")
        return self.root / "blobs" / "sha256" / hexdigest

    def _blob_bytes(self, digest: str, size: int) -> bytes:
        data = self._read_small(self._path(digest))
        if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise FormatError(f"blob {digest} is damaged (its content does not match its digest)")
        return data

    def fetch(self, store: Store, layer: Layer, stop=None, progress=None) -> None:
        from builder.export.pull import VerifiedStream  # lazy: saves ~87 ms at start-up

        with open(self._path(layer.blob.digest), "rb") as f:
            stored = store.put_blob_file(VerifiedStream(f, layer.blob.digest, layer.blob.size, stop=stop,
                                                        progress=progress))
        if stored.digest != layer.blob.digest:
            raise PybuildError(f"blob {layer.blob.digest} was stored as {stored.digest}")


def open_sources(specs: list[CacheSpec], registries, warn) -> list[CacheSource]:
    """The readable caches among ``specs``, in order; each unreadable one is one warning."""
    sources: list[CacheSource] = []
    for spec in specs:
        try:
            if spec.keyed:
                from builder.remotecache.keyed import KeyedSource  # lazy: an import cycle (keyed imports this module)

                source: CacheSource = KeyedSource(spec, registries, warn)
            else:
                source = LocalSource(spec, warn) if spec.type == "local" else RegistrySource(spec, registries, warn)
        except (PybuildError, FormatError, OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            message = getattr(exc, "message", None) or (exc.strerror if isinstance(exc, OSError) and exc.strerror
                                                          else str(exc)) or type(exc).__name__
            warn(f"--cache-from {spec.describe()}: cannot use it, building without it: {message}")
            continue
        sources.append(source)
    return sources


def default_warn(text: str) -> None:
    """Warnings go to stderr (above the tty view), as buildx prints cache import failures."""
    import sys  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    print(f"WARNING: {text}", file=sys.stderr, flush=True)


__all__ = ["CacheSource", "LocalSource", "RegistrySource", "default_warn", "open_sources"]
