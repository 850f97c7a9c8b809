"""Push a stored image to a registry: blobs first, `UPLOADS` at a time (skipped when present, mounted when another
repository of the same registry pushed in this command has them; each upload reports its bytes to an optional
``progress``), then the manifest, whose digest must come back unchanged. The first blob that fails stops the
others at their next read and is the error raised."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from builder.errors import UsageError
from builder.export.parallel import Meter, Progress, each
from builder.export.reference import Reference
from builder.export.registry import Registries, Registry, RegistryError, push_scope

if TYPE_CHECKING:
    from cache import Descriptor, ImageRecord, Store


UPLOADS = 3  # blobs sent at once


@dataclass(frozen=True, slots=True)
class PushResult:
    name: str
    digest: str
    uploaded: int  # blobs sent
    mounted: int  # blobs mounted from another repository
    existing: int  # blobs the registry already had
    bytes: int  # bytes sent
    seconds: float

    def summary(self) -> str:
        return (f"{self.name}@{self.digest} ({self.uploaded} blobs uploaded, {self.mounted} mounted, "
                f"{self.existing} already there; {self.bytes} bytes in {self.seconds:.2f} s)")


def _blobs(record) -> list:
    """Layer blobs (each once, bottom first), then the config: everything the manifest points at."""
    seen: dict[str, object] = {}
    for desc in [*(l.blob for l in record.layers), record.config]:
        seen.setdefault(desc.digest, desc)
    return list(seen.values())


def _push_blob(store: Store, client: Registry, ref: Reference, desc: Descriptor, scope: str, sources: tuple[str, ...],
               stop=None, progress: Progress | None = None) -> str:
    """"existing", "mounted" or "uploaded"."""
    if client.has_blob(ref.repository, desc.digest, scope):
        return "existing"
    location = None
    for source in sources:
        location = client.mount_blob(ref.repository, desc.digest, source, scope)
        if location is None:
            return "mounted"
    store.verify_blob(desc.digest)  # CorruptBlob rather than a damaged blob the registry may keep (or refuse)
    meter = Meter(progress, desc.digest, desc.size, stop)
    client.upload_blob(ref.repository, desc.digest, store.blob_path(desc.digest), scope, location, meter=meter)
    return "uploaded"


def push_image(store: Store, record: ImageRecord, name: str, registries: Registries, *, insecure: bool = False,
               mount_sources: tuple[str, ...] = (), progress: Progress | None = None,
               compression: str = "gzip") -> PushResult:
    """Push ``record`` (a cache.ImageRecord) as ``name``; ``mount_sources`` are repositories of the same
    registry that already hold its blobs; ``progress`` hears each upload's bytes (from upload threads).
    Lazily committed layers are compressed first in ``compression`` (builder.export.image.exportable), which
    makes the manifest pushed. Raises RegistryError naming the image on any failure."""
    from builder.export.image import exportable  # lazy: saves ~1 ms at start-up

    record = exportable(store, record, compression)
    ref = Reference.parse(name)
    if ref.digest and ref.digest != record.manifest.digest:
        raise UsageError(f"cannot push to {name}: the image's manifest is {record.manifest.digest}")
    started = time.monotonic()
    client = registries.client(ref.domain, insecure=insecure)
    sources = tuple(s for s in mount_sources if s != ref.repository)
    scope = push_scope(ref.repository, *sources)
    counts = {"uploaded": 0, "mounted": 0, "existing": 0}
    sent = 0
    try:
        blobs = _blobs(record)
        outcomes = each(blobs, lambda desc, stop: _push_blob(store, client, ref, desc, scope, sources, stop, progress),
                        workers=UPLOADS, name="pybuild-push")
        for desc, outcome in zip(blobs, outcomes):
            counts[outcome] += 1
            sent += desc.size if outcome == "uploaded" else 0
        with store.open_blob(record.manifest.digest) as fh:  # verified on close
            manifest = fh.read()
        returned = client.put_manifest(ref.repository, ref.reference, manifest, record.manifest.media_type, scope)
    except RegistryError as exc:
        raise RegistryError(f"push {ref}: {exc.message}", hint=exc.hint) from exc
    if returned and returned != record.manifest.digest:
        raise RegistryError(f"push {ref}: the registry stored the manifest as {returned}, "
                            f"not as the {record.manifest.digest} that was built")
    return PushResult(str(ref), record.manifest.digest, bytes=sent, seconds=time.monotonic() - started, **counts)
