"""Images and the names that point at them.

An image is stored as two blobs (manifest, config) plus an ``images`` row listing its layers;
a tag (``tags`` row) maps a fully qualified name such as ``docker.io/me/app:latest`` to a
manifest digest. Tags are what keep images, and through them blobs and snapshots, alive in
`gc.prune`. Names are compared verbatim: the caller normalises them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

from cache.blobs import BlobStore
from cache.errors import BlobNotFound, StoreError
from cache.index import Index
from cache.model import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    ImageRecord,
    Layer,
)


def put_image(index: Index, blobs: BlobStore, manifest: bytes, config: bytes,
              layers: list[Layer], present: Callable[[Layer], bool] | None = None) -> ImageRecord:
    """Store the manifest and config blobs and record the image; layer blobs must be present (or, with
    ``present``, whatever it accepts: a lazy layer's snapshot)."""
    try:
        doc = json.loads(manifest)
    except ValueError as e:
        raise StoreError(f"put image: manifest is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise StoreError("put image: manifest is not a JSON object")
    for layer in layers:
        if not blobs.has(layer.blob.digest) and (present is None or not present(layer)):
            raise BlobNotFound(layer.blob.digest)
    config_type = (doc.get("config") or {}).get("mediaType", MEDIA_TYPE_OCI_CONFIG)
    config_desc = blobs.put(config)
    manifest_desc = blobs.put(manifest)
    record = ImageRecord(
        manifest=_typed(manifest_desc, doc.get("mediaType", MEDIA_TYPE_OCI_MANIFEST)),
        config=_typed(config_desc, config_type),
        layers=tuple(layers),
        created=time.time(),
    )
    index.put_image(record)
    stored = index.image(record.manifest.digest)
    assert stored is not None
    return stored


def _typed(desc: Descriptor, media_type: str) -> Descriptor:
    return replace(desc, media_type=media_type)


def tag(index: Index, name: str, manifest_digest: str) -> None:
    if not name:
        raise StoreError("tag: empty image name")
    index.set_tag(name, manifest_digest)


def resolve(index: Index, name: str) -> ImageRecord | None:
    digest = index.tag(name)
    return index.image(digest) if digest else None


def images(index: Index) -> list[tuple[str, ImageRecord]]:
    out = []
    for name, digest in index.tags():
        image = index.image(digest)
        if image is not None:
            out.append((name, image))
    return out


def untag(index: Index, name: str) -> None:
    """Remove a name; raises StoreError if it is not tagged. The image itself goes at prune."""
    if not index.delete_tag(name):
        raise StoreError(f"untag: no image named {name!r}")


def remove_image(index: Index, manifest_digest: str) -> bool:
    """Forget an image that no name points at (its blobs go at the next prune); False if it is tagged or gone."""
    if index.image(manifest_digest) is None or any(d == manifest_digest for _, d in index.tags()):
        return False
    index.delete_image(manifest_digest)
    return index.image(manifest_digest) is None
