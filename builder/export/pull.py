"""Pull an image from a registry into the store, so FROM can use it and later builds need no network.

Manifests: OCI image manifests and docker v2 schema2 manifests; an OCI index or docker manifest list is resolved
to the entry for linux/<host architecture> (docker schema1 is refused). Every byte is checked: a manifest against
the digest it was asked by (or the registry's Docker-Content-Digest), config and layers against their
descriptors while they stream into the store; a mismatch raises before anything is kept (the store drops the
temp file). Blobs already in the store are not fetched again; the others are fetched `DOWNLOADS` at a time (as
containerd's and dockerd's default max-concurrent-downloads), each reporting its bytes to an optional ``progress``
callback; the first layer that fails stops the others at their next read and is the error raised. The image is
recorded and tagged with its normalised name (a digest reference is a name too), which `resolve_local` finds.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
from typing import TYPE_CHECKING

from builder import imagejson
from builder.export.parallel import Meter, Progress, each
from builder.export.reference import Reference
from builder.export.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Registries,
    Registry,
    RegistryError,
    pull_scope,
)
from builder.ops.source import OCI_LAYER_TYPES
from builder.plan.bases import normalize_name
from builder.plan.imageconfig import host_architecture

if TYPE_CHECKING:
    from cache import ImageRecord, Store

MAX_CONFIG = 8 << 20
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOWNLOADS = 3  # layers fetched at once
# layers fetched and unpacked at once: each one's download, decompression and file writes (which release the GIL)
# overlap the others', so a base of a few layers (most have 1-6) is one round, not two
UNPACKS = 6


def host_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) in OCI terms for this machine."""
    machine = os.uname().machine
    variant = {"armv7l": "v7", "armv6l": "v6", "aarch64": "v8", "arm64": "v8"}.get(machine)
    return "linux", host_architecture(), variant


def choose_platform(index: dict, want: tuple[str, str, str | None]) -> dict:
    """The index entry for ``want``; an entry without a variant matches any variant. Raises RegistryError."""
    os_name, arch, variant = want
    entries = imagejson.index_entries(index, "the index")
    candidates = [m for m in entries
                  if (m.get("platform") or {}).get("os") == os_name
                  and (m.get("platform") or {}).get("architecture") == arch]
    exact = [m for m in candidates if m["platform"].get("variant") in (None, "", variant)]
    if exact or candidates:
        return (exact or candidates)[0]
    offered = sorted({"/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
                      for m in entries for p in [m.get("platform") or {}]})
    raise RegistryError(f"no image for {os_name}/{arch} in the index (it has: {', '.join(offered) or 'none'})")


class VerifiedStream(io.RawIOBase):
    """Reads a response and raises RegistryError at its end unless exactly ``size`` bytes hashed to ``digest``;
    ``stop`` and ``progress`` as `parallel.Meter`'s."""

    def __init__(self, response, digest: str, size: int, *, stop: threading.Event | None = None,
                 progress: Progress | None = None) -> None:
        super().__init__()
        self._response = response
        self._digest = digest
        self._size = size
        self._hasher = hashlib.sha256()
        self._meter = Meter(progress, digest, size, stop)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._meter.check()
        n = self._response.readinto(buffer) or 0
        self._hasher.update(memoryview(buffer)[:n])
        count = self._meter.count + n
        if count > self._size or (n == 0 and count != self._size):
            raise RegistryError(f"blob {self._digest}: expected {self._size} bytes, got {count}"
                                + (" or more" if n else ""))
        if n == 0 and "sha256:" + self._hasher.hexdigest() != self._digest:
            raise RegistryError(f"blob {self._digest}: content has digest sha256:{self._hasher.hexdigest()}")
        self._meter.add(n)
        return n


def _get_manifest(client: Registry, ref: Reference, reference: str) -> tuple[bytes, dict, str]:
    """(body, document, media type), the body checked against the digest it was asked by or announced."""
    body, media_type, announced = client.get_manifest(ref.repository, reference, pull_scope(ref.repository))
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    expected = reference if reference.startswith("sha256:") else announced
    if expected and expected.startswith("sha256:") and expected != actual:
        raise RegistryError(f"manifest {reference}: content has digest {actual}, not {expected}")
    doc = imagejson.load(body, f"manifest {reference[:80]}")
    if doc.get("schemaVersion") == 1:
        raise RegistryError("docker schema1 manifests are not supported",
                            hint="push the image again with a current docker or skopeo (schema2 or OCI)")
    kind = doc.get("mediaType") or media_type
    if not isinstance(kind, str):
        raise imagejson.BadImageJSON(f"manifest {reference[:80]} has a mediaType that is not a string")
    if kind not in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST):
        kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    return body, doc, kind


def _fetch_config(client: Registry, ref: Reference, desc: dict) -> bytes:
    if desc["size"] > MAX_CONFIG:
        raise RegistryError(f"config {desc['digest']} is larger than {MAX_CONFIG} bytes")
    with client.open_blob(ref.repository, desc["digest"], pull_scope(ref.repository)) as resp:
        stream = VerifiedStream(resp, desc["digest"], int(desc["size"]))
        return stream.read()


def _fetch_layer(store: Store, client: Registry, ref: Reference, desc: dict, stop: threading.Event | None = None,
                 progress: Progress | None = None) -> None:
    with client.open_blob(ref.repository, desc["digest"], pull_scope(ref.repository)) as resp:
        stream = VerifiedStream(resp, desc["digest"], int(desc["size"]), stop=stop, progress=progress)
        stored = store.put_blob_file(stream)
    if stored.digest != desc["digest"]:  # VerifiedStream already checked; this guards the store's view
        raise RegistryError(f"blob {desc['digest']} was stored as {stored.digest}")


class _LayerStream(VerifiedStream):
    """A layer's `VerifiedStream` that owns its response: closing it closes the connection."""

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


def _unpack_layers(store: Store, client: Registry, ref: Reference, layers: list, progress: Progress | None) -> list:
    """Unpack the layers while they download (as containerd's unpacker applies a layer while fetching it), each
    blob kept on the way; up to `UNPACKS` at a time. Returns the snapshots, in order."""
    from cache import Descriptor  # lazy: saves ~35 ms at start-up

    def fetch(desc, stop: threading.Event) -> _LayerStream:
        response = client.open_blob(ref.repository, desc.digest, pull_scope(ref.repository))
        return _LayerStream(response, desc.digest, desc.size, stop=stop, progress=progress)

    descs = [Descriptor(OCI_LAYER_TYPES.get(layer.blob.media_type, layer.blob.media_type), layer.blob.digest,
                        layer.blob.size) for layer in layers]
    return store.import_layers(None, descs, fetch=fetch, workers=UNPACKS)


def _fetch_layers(store: Store, client: Registry, ref: Reference, descs: list[dict],
                  progress: Progress | None) -> None:
    """Fetch the layers not yet in the store, `DOWNLOADS` at a time (see `parallel.each`)."""
    todo = list({d["digest"]: d for d in descs if not store.has_blob(d["digest"])}.values())
    each(todo, lambda desc, stop: _fetch_layer(store, client, ref, desc, stop, progress), workers=DOWNLOADS,
         name="pybuild-pull")


def _image_manifest(client: Registry, ref: Reference) -> tuple[bytes, dict]:
    """The image manifest for this machine: ``ref``'s, or its index's entry for this platform."""
    body, doc, kind = _get_manifest(client, ref, ref.reference)
    if kind in (OCI_INDEX, DOCKER_LIST):
        entry = choose_platform(doc, host_platform())
        body, doc, kind = _get_manifest(client, ref, entry["digest"])
        if kind in (OCI_INDEX, DOCKER_LIST):
            raise RegistryError(f"index entry {entry['digest']} is another index (nested indexes unsupported)")
    return body, doc


def pull_image(store: Store, name: str, registries: Registries, progress: Progress | None = None, *,
               unpack: bool = False) -> ImageRecord:
    """Fetch ``name`` into the store and tag it; returns the cache.ImageRecord. ``progress`` hears each
    layer's bytes as they arrive (from download threads). With ``unpack`` the layers are also made snapshots
    while they download (what FROM needs), and each one's content is checked against the config's diff_id.

    Raises RegistryError saying what failed (the caller names the image: see plan/bases.py resolve_base); a
    malformed index, manifest or config is an imagejson.BadImageJSON naming the document and the field."""
    from cache import Descriptor, Layer  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    ref = Reference.parse(name)
    client = registries.client(ref.domain)
    body, doc = _image_manifest(client, ref)
    config_desc, layer_descs = imagejson.manifest_parts(doc, f"manifest {body_digest(body)}")
    config = _fetch_config(client, ref, config_desc)
    what = f"config {config_desc['digest']}"
    diff_ids = imagejson.image_config(imagejson.load(config, what), what)["rootfs"].get("diff_ids") or []
    if len(diff_ids) != len(layer_descs):
        raise RegistryError("manifest and config disagree on the number of layers")
    layers = []
    for desc, diff_id in zip(layer_descs, diff_ids):
        if desc.get("mediaType") == FOREIGN_LAYER or desc.get("urls"):
            raise RegistryError(f"layer {desc['digest']} is a foreign layer (not in the registry): unsupported")
        layers.append(Layer(diff_id, Descriptor(desc.get("mediaType", ""), desc["digest"], desc["size"])))
    if unpack:
        _check_diff_ids(layers, _unpack_layers(store, client, ref, layers, progress))
    _fetch_layers(store, client, ref, layer_descs, progress)  # those an earlier unpack left out, if any
    record = store.put_image(body, config, layers)
    store.tag(normalize_name(name), record.manifest.digest)
    return record


def body_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _check_diff_ids(layers: list, snapshots: list) -> None:
    """As containerd's unpacker: the config vouches for what each layer unpacks to."""
    for number, (layer, snapshot) in enumerate(zip(layers, snapshots), 1):
        if str(snapshot.diff_id) != str(layer.diff_id):
            raise RegistryError(f"layer {number} of {len(layers)} ({layer.blob.digest}) unpacks to content with "
                                f"diff_id {snapshot.diff_id}, but the image config says {layer.diff_id}: the image "
                                "is damaged; report it to whoever pushed it")
