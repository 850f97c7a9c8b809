"""FROM: bring a base image's layers into the store as snapshots (reused when already there)."""
from __future__ import annotations
from typing import TYPE_CHECKING

from builder.plan.steps import SourceOp, Step

if TYPE_CHECKING:
    from cache import Layer, Snapshot, Store


# A base pulled as docker schema2 names its layers with docker's media types; the same bytes are OCI layers, and the
# manifests pybuild writes are OCI, so its layers take the OCI names (as BuildKit does with oci-mediatypes).
OCI_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
}


def execute(store: Store, step: Step) -> tuple[Snapshot | None, tuple[Layer, ...]]:
    """Returns (top snapshot, layers) for the base image."""
    from cache import BlobNotFound, Descriptor, Layer, StoreError  # lazy: saves ~30 ms at start-up

    op = step.op
    assert isinstance(op, SourceOp)  # the solver sends its source steps here
    descs = []
    for ref in op.layers:
        lazy = Layer(ref.diff_id, Descriptor(ref.media_type, ref.digest, ref.size))  # a local image built lazily
        if not store.has_blob(ref.digest) and not (op.layout_dir is None and store.has_layer(lazy)):
            if op.layout_dir is None:
                raise FileNotFoundError(f"blob {ref.digest} of {op.ref} is missing from the store")
            # lazy: saves ~5 ms at start-up
            from builder.plan.layout import open_blob  # checked: a regular file, its size and its digest

            with open_blob(op.layout_dir, ref.digest, ref.size, f"layer of {op.ref}") as fh:
                if store.put_blob_file(fh).digest != ref.digest:
                    raise StoreError(f"layer {ref.digest} of {op.ref} was stored under another digest")
        descs.append(Descriptor(OCI_LAYER_TYPES.get(ref.media_type, ref.media_type), ref.digest, ref.size))
    try:
        snapshots = store.import_layers(None, descs)  # unpacked side by side, stacked in order
    except BlobNotFound:  # a lazily committed layer whose snapshot chain is gone: unpack a blob made of it
        descs = [d if store.has_blob(d.digest) else store.layer_blob(Layer(ref.diff_id, d), None).blob
                 for ref, d in zip(op.layers, descs)]
        snapshots = store.import_layers(None, descs)
    for number, (ref, snapshot) in enumerate(zip(op.layers, snapshots), 1):
        if str(snapshot.diff_id) != ref.diff_id:  # as containerd's unpacker: the config vouches for the content
            raise StoreError(
                f"layer {number} of {len(op.layers)} of {op.ref} ({ref.digest}) unpacks to content with diff_id "
                f"{snapshot.diff_id}, but the image config says {ref.diff_id}: the image is damaged; "
                f"pull it again (or rebuild it) and report the registry or tool that produced it")
    layers = tuple(Layer(ref.diff_id, desc) for ref, desc in zip(op.layers, descs))
    return (snapshots[-1] if snapshots else None), layers
