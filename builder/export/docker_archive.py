"""Write an image as a `docker save` archive that is also an OCI image layout, as docker >= 25 does.

Contents of the tar (entries in this order, owner 0:0, mtime 0, so the same image gives the same bytes)::

    blobs/sha256/<hex>   the layer blobs (lazily committed ones compressed now), then the config, the OCI manifest
    index.json           OCI index: one entry per name (ref.name = tag, io.containerd.image.name = full name)
    manifest.json        docker's index: [{"Config": "blobs/sha256/<config>", "RepoTags": [...],
                                           "Layers": ["blobs/sha256/<layer>", ...]}]
    oci-layout           {"imageLayoutVersion": "1.0.0"}

Without manifest.json the same tar is buildx's `type=oci` tarball (`--output type=oci,dest=FILE.tar`).

`docker load` reads manifest.json and decompresses each layer itself (moby image/tarexport/load.go), as does
skopeo's `docker-archive:` (containers/image docker/internal/tarfile/src.go), so layers are not re-encoded and the
index's manifest is byte for byte the one pybuild built. zstd layers need a docker that reads zstd (>= 23).
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from builder.export.atomic import atomic_file
from builder.export.image import MANIFEST_MEDIA_TYPE, exportable
from builder.export.oci_layout import IMAGE_NAME
from builder.plan.bases import REF_NAME, split_tag

if TYPE_CHECKING:
    from cache import ImageRecord, Store

DOCKER_HUB = "docker.io/"
OFFICIAL = "library/"


def familiar_name(full: str) -> str:
    """docker's short form of a normalised name: `docker.io/library/app:1` → `app:1`, `docker.io/me/app` → `me/app`."""
    if not full.startswith(DOCKER_HUB):
        return full
    short = full[len(DOCKER_HUB):]
    if short.startswith(OFFICIAL) and "/" not in short[len(OFFICIAL):]:
        short = short[len(OFFICIAL):]
    return short


def _blob_name(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


def _info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _index(record: ImageRecord, names: list[str]) -> dict:
    base = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": record.manifest.digest, "size": record.manifest.size}
    entries = [dict(base, annotations={IMAGE_NAME: full, REF_NAME: split_tag(full)[1]}) for full in names]
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries or [base]}


def write_archive_to(out: IO[bytes], store: Store, record: ImageRecord, names: list[str],
                     docker_manifest: bool = True, compression: str = "gzip") -> None:
    """Stream the archive of ``record`` (a cache.ImageRecord) to ``out``; ``names`` are normalised image names.
    Without ``docker_manifest`` it is the plain OCI layout tar (buildx's type=oci tarball: no manifest.json).

    Blobs are read through the store's verifying reader: a damaged blob raises CorruptBlob (a StoreError). A
    stream that is not a file (``dest=-`` into a pipe) may be consumed as it comes, so there each blob is verified
    before any of its bytes are written (one more read, from the page cache)."""
    write_images_to(out, store, [(record, names)], docker_manifest, compression)


def write_images_to(out: IO[bytes], store: Store, images: list[tuple[ImageRecord, list[str]]],
                    docker_manifest: bool = True, compression: str = "gzip") -> None:
    """`write_archive_to` for several (record, names) pairs in one archive, as `docker save A B` writes; lazily
    committed layers are compressed first in ``compression`` (builder.export.image.exportable)."""
    images = [(exportable(store, record, compression), names) for record, names in images]
    stream = not _is_file(out)
    manifest_entry = [{"Config": _blob_name(record.config.digest),
                       "RepoTags": [familiar_name(n) for n in names],
                       "Layers": [_blob_name(l.blob.digest) for l in record.layers]} for record, names in images]
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [m for record, names in images for m in _index(record, names)["manifests"]]}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info("blobs", directory=True))
        tar.addfile(_info("blobs/sha256", directory=True))
        written: set[str] = set()
        for record, _ in images:
            for desc in [*(l.blob for l in record.layers), record.config, record.manifest]:
                if desc.digest in written:
                    continue
                written.add(desc.digest)
                if stream:
                    store.verify_blob(desc.digest)
                with store.open_blob(desc.digest) as blob:
                    tar.addfile(_info(_blob_name(desc.digest), desc.size), blob)
        for name, doc in (("index.json", index), ("manifest.json", manifest_entry),
                          ("oci-layout", {"imageLayoutVersion": "1.0.0"})):
            if name == "manifest.json" and not docker_manifest:
                continue
            data = json.dumps(doc, indent=2 if name != "oci-layout" else None).encode()
            tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _is_file(out: IO[bytes]) -> bool:
    try:
        return out.seekable()
    except (AttributeError, OSError, ValueError):
        return False


def write_archive(store: Store, dest: str | Path, record: ImageRecord, names: list[str],
                  docker_manifest: bool = True, compression: str = "gzip") -> None:
    """Write the archive to the file ``dest`` atomically: a temp file beside it, fsync, rename.

    On any error (or Ctrl-C) the temp file is removed and an existing ``dest`` is left as it was."""
    dest = Path(dest)
    with atomic_file(dest) as fh:
        write_archive_to(fh, store, record, names, docker_manifest, compression)
