"""The blob of a layer in a given compression, made when missing: the one way every reader gets a layer's bytes.

A build commits its layers lazily (`SnapshotStore.commit` with compression None): the tar is hashed for its diff_id
and nothing else is written, as BuildKit's containerd worker keeps a snapshot until an exporter asks its
`GetRemotes` for compressed blobs ("compression on export"). Such a layer is described as its uncompressed tar,
``Layer(diff_id, Descriptor(<tar media type>, diff_id, tar size))``, whose bytes exist nowhere yet.

`layer_blob` hands out a layer whose blob file exists, in the compression asked for:

1. the layer itself if its blob is in that format and present;
2. another blob of the same diff_id in that format (the ``layers`` table knows every blob made or pulled);
3. else a new blob, compressed once from a source and remembered: an existing blob of the diff_id in any format
   (decompressed), or a snapshot whose tar is that diff_id (``lazy_layers``: the tar is written again from the
   directory with the commit's SOURCE_DATE_EPOCH; `cache.layertar` is a pure function of the tree).

The new blob's content is hashed while it is written: a tar that does not hash to the diff_id (a snapshot changed
on disk, a damaged blob) raises `StoreError` and keeps nothing. Two processes making the same blob serialise on a
per-(diff_id, compression) lock; the second finds the first's blob. The compressors are deterministic, so the blob
is byte for byte the one an eager commit writes, and so are the manifests listing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from cache.errors import StoreError
from cache.model import (MEDIA_TYPE_LAYER_TAR, ByteReader, Descriptor, Digest, Layer, media_type_for,
                         sniffed_media_type)

if TYPE_CHECKING:
    from cache import Store
    from cache.compress import LayerSink

ANY = None  # layer_blob's compression for readers that take any format (gzip is made if none exists)


def find(store: Store, layer: Layer, media_type: str | None) -> Layer | None:
    """A present blob of ``layer``'s diff_id in ``media_type`` (any format for None), the layer's own first."""
    blobs = store._blobs
    if (media_type is None or layer.blob.media_type == media_type) and blobs.has(layer.blob.digest):
        return layer
    for digest in store._index.blobs_for(layer.diff_id):
        if digest == layer.blob.digest:
            continue
        try:
            with open(blobs.path_for(digest), "rb") as f:
                kind = _kind(f.read(4), digest == layer.diff_id)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            continue
        if kind is not None and (media_type is None or kind == media_type):
            return Layer(layer.diff_id, Descriptor(kind, Digest(digest), size))
    return None


def _kind(head: bytes, is_diff: bool) -> str | None:
    """The media type of a blob the index lists for a diff_id (it keeps no type): the blob whose digest is the
    diff_id is that uncompressed tar (whatever its first bytes look like); any other is a compressed form, gzip or
    zstd by its magic (None: neither, not a form of this layer)."""
    if is_diff:
        return MEDIA_TYPE_LAYER_TAR
    kind = sniffed_media_type(head)
    return kind if kind != MEDIA_TYPE_LAYER_TAR else None


def has(store: Store, layer: Layer) -> bool:
    """Can `layer_blob` hand this layer out: a blob of its diff_id is present, or a snapshot to make it from?"""
    def source() -> bool:  # a ready snapshot, or one this process committed and still writes out
        return any(ready or store._snapshots.is_settling(snap_id)
                   for snap_id, _, ready in store._index.lazy_sources(layer.diff_id))

    if layer.blob.digest == layer.diff_id and source():
        return True  # a lazy layer
    return find(store, layer, None) is not None or source()


def layer_blob(store: Store, layer: Layer, compression: str | None,
               cancelled: Callable[[], bool] | None = None,
               progress: Callable[[int, int], None] | None = None) -> Layer:
    """``layer`` with a present blob in ``compression`` (gzip, zstd, uncompressed; None: any present blob, else
    gzip), made from a source once and remembered when missing; the diff_id never changes. ``cancelled`` is polled
    per 1 MiB written: once it says stop, `Interrupted` is raised and nothing is kept. ``progress(tarred,
    compressed)`` hears the bytes of a blob being made."""
    media_type = None if compression is None else media_type_for(compression)
    found = find(store, layer, media_type)
    if found is not None:
        return found
    compression = compression or "gzip"
    with store.lock(f"layer-blob {layer.diff_id} {compression}"):
        found = find(store, layer, media_type_for(compression))  # made meanwhile by another build
        if found is None:
            found = _make(store, layer, compression, cancelled, progress)
    return found


def _make(store: Store, layer: Layer, compression: str, cancelled: Callable[[], bool] | None,
          progress: Callable[[int, int], None] | None = None) -> Layer:
    # lazy: saves ~10 ms at start-up (the compressors)
    from cache.compress import LayerSink, decompressed
    from cache.layertar import write_layer
    from cache.tarsink import Stoppable

    source = find(store, layer, None)
    sink = LayerSink(store._blobs, compression)
    try:
        if source is not None:  # another format of the same tar: decompress and copy
            with store.open_blob(source.blob.digest) as raw:
                _copy(decompressed(raw, str(source.blob.digest), source.blob.media_type), sink, cancelled, progress)
        else:
            snapshots = [(snap_id, epoch) for snap_id, epoch, ready in store._index.lazy_sources(layer.diff_id)
                         if ready]
            if not snapshots:
                raise StoreError(f"layer {layer.diff_id} has neither a blob nor a snapshot to make one from "
                                 "(pruned?): build the image again")
            snap_id, epoch = snapshots[0]
            out = sink if cancelled is None and progress is None else Stoppable(sink, cancelled, progress)
            write_layer(store._snapshots.path(snap_id), out, epoch=epoch)
        diff_id, blob = sink.finish()
    except BaseException:
        sink.discard()
        raise
    if diff_id != layer.diff_id:
        store._blobs.delete(blob.digest)
        where = f"blob {source.blob.digest}" if source is not None else f"snapshot {snapshots[0][0]}"
        raise StoreError(f"layer {layer.diff_id}: its {where} unpacks to {diff_id}, not {layer.diff_id}; the store "
                         "was changed on disk: prune it and build again", path=store._blobs.path_for(blob.digest))
    made = Layer(diff_id, blob)
    store._index.add_layer(made)
    return made


def _copy(tar: ByteReader, sink: LayerSink, cancelled: Callable[[], bool] | None,
          progress: Callable[[int, int], None] | None = None) -> None:
    # lazy: saves ~1 ms at start-up
    from cache.tarsink import CHUNK
    from cache.errors import Interrupted

    while chunk := tar.read(CHUNK):
        if cancelled is not None and cancelled():
            raise Interrupted("layer re-compression interrupted")
        sink.write(chunk)
        if progress is not None:
            progress(sink.tell(), sink.compressed_size)
