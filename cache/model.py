"""Values exchanged between the store and its users (frozen, slotted dataclasses).

Only `MutableSnapshot` is writable: it is the one thing a build step may change (its ``upper``
directory); `Store.commit` turns it into an immutable `Snapshot` plus an optional `Layer`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cache.errors import StoreError


class ByteReader(Protocol):
    """What layer code reads from: a blob, a decompressed blob or a tar stream (``n`` -1: to the end)."""

    def read(self, n: int = -1, /) -> bytes: ...

MEDIA_TYPE_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# --compression name -> the layer media type it produces (the compressors are in cache.compress, which
# loads zstandard: telling formats apart must not, a fully cached build does it for every layer)
LAYER_MEDIA_TYPES = {"gzip": MEDIA_TYPE_LAYER_GZIP, "zstd": MEDIA_TYPE_LAYER_ZSTD,
                     "uncompressed": MEDIA_TYPE_LAYER_TAR}
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def media_type_for(compression: str) -> str:
    """The layer media type a compression name produces; StoreError for unknown names."""
    try:
        return LAYER_MEDIA_TYPES[compression]
    except KeyError:
        raise StoreError(f"unknown compression {compression!r}: want one of "
                         f"{', '.join(sorted(LAYER_MEDIA_TYPES))}") from None


# A layer media type's compression, as its manifest declares it: OCI's layer types (and their nondistributable
# forms) and docker schema2's (and its foreign ones), as containerd's images.DiffCompression reads them. A blob is
# decoded as declared, never by its first bytes where the type is known: an uncompressed tar whose first member's
# name begins with gzip's or zstd's magic would otherwise be read as a compressed stream (another diff).
_OCI_LAYER = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar")
_DOCKER_LAYER = ("application/vnd.docker.image.rootfs.diff.tar", "application/vnd.docker.image.rootfs.foreign.diff.tar")
DECLARED_COMPRESSION = {
    **{base + suffix: kind for base in _OCI_LAYER for suffix, kind in
       (("", "uncompressed"), ("+gzip", "gzip"), ("+zstd", "zstd"))},
    **{base + suffix: kind for base in _DOCKER_LAYER for suffix, kind in
       (("", "uncompressed"), (".gzip", "gzip"), (".zstd", "zstd"))},
}


def declared_compression(media_type: str | None) -> str | None:
    """'gzip', 'zstd' or 'uncompressed' for a layer media type; None for a type that names no layer format."""
    return DECLARED_COMPRESSION.get((media_type or "").split(";", 1)[0].strip())


def sniffed_media_type(head: bytes) -> str:
    """The layer media type of a blob, from its first four bytes: only for blobs whose type nobody declared
    (a docker save layer file, `pybuild import`'s tar), as an uncompressed tar may begin with either magic."""
    if head.startswith(GZIP_MAGIC):
        return MEDIA_TYPE_LAYER_GZIP
    if head.startswith(ZSTD_MAGIC):
        return MEDIA_TYPE_LAYER_ZSTD
    return MEDIA_TYPE_LAYER_TAR


class Digest(str):
    """A checked ``sha256:<64 lowercase hex>`` string; compares equal to the plain string."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if not _DIGEST_RE.fullmatch(value):
            raise ValueError(f"invalid digest {value!r}: want sha256:<64 lowercase hex digits>")
        return super().__new__(cls, value)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of ``data``."""
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hex(cls, hexdigest: str) -> Digest:
        """Build from a bare sha256 hex string (as returned by ``hashlib``)."""
        return cls("sha256:" + hexdigest)

    @property
    def algorithm(self) -> str:
        return "sha256"

    @property
    def hex(self) -> str:
        return self[7:]


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor. ``media_type`` is "" for a blob stored without a type."""

    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()

    def to_oci(self) -> dict[str, Any]:
        """The descriptor as it appears in OCI JSON (manifest ``layers``/``config``, index)."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_oci(cls, obj: dict[str, Any]) -> Descriptor:
        """Parse the OCI JSON form (the inverse of `to_oci`)."""
        annotations = tuple(sorted((obj.get("annotations") or {}).items()))
        return cls(obj.get("mediaType", ""), Digest(obj["digest"]), int(obj["size"]), annotations)


@dataclass(frozen=True, slots=True)
class Layer:
    """A layer: its uncompressed tar digest (``diff_id``, goes in the image config) and its blob."""

    diff_id: str
    blob: Descriptor


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable directory holding one layer's files; ``path`` is used as an overlay lowerdir.

    ``parent`` is the snapshot below it (None for a bottom layer), ``diff_id`` the digest of the
    layer tar it corresponds to and ``size`` the apparent size of its regular files in bytes.
    """

    id: int
    parent: int | None
    diff_id: str | None
    size: int
    path: Path


@dataclass(slots=True)
class MutableSnapshot:
    """A writable layer in preparation: mount ``lowerdirs`` (top-most first) + ``upper`` + ``work``.

    Created by `Store.prepare`, ended by exactly one of `Store.commit` / `Store.abort`. ``upper``
    and ``work`` live on the same filesystem as the snapshot area, so commit is a rename.
    """

    parent: Snapshot | None
    upper: Path
    work: Path
    lowerdirs: list[Path]
    # The private temp directory holding upper/ and work/, and the fd whose flock marks it live.
    tmpdir: Path = field(repr=False, default=Path())
    lock_fd: int | None = field(repr=False, default=None)

    @property
    def closed(self) -> bool:
        """True once committed or aborted."""
        return self.lock_fd is None


@dataclass(frozen=True, slots=True)
class CacheRecord:
    """One cache-index entry: the result of a build step with cache key ``key``."""

    key: str
    parent_key: str | None
    snapshot_id: int | None
    layer: Layer | None
    description: dict[str, Any]
    created: float
    last_used: float
    uses: int
    size: int


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """An image known to the store: its manifest and config blobs and its layers (bottom first)."""

    manifest: Descriptor
    config: Descriptor
    layers: tuple[Layer, ...]
    created: float
