"""Assemble a stage's image: layers along its step chain, the OCI config (history, diff_ids) and manifest."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from builder.plan.imageconfig import HistoryEntry, canonical_json
from builder.plan.steps import StepGraph
from builder.plan.steps import StepResult

if TYPE_CHECKING:
    from cache import ImageRecord, Layer, Store

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """A finished image: canonical config and manifest bytes, their digests, and its layers."""

    config: bytes
    manifest: bytes
    layers: tuple  # cache.Layer
    config_digest: str
    manifest_digest: str


def _chain(graph: StepGraph, last_step: int | None) -> list[int]:
    chain: list[int] = []
    step = last_step
    while step is not None:
        chain.append(step)
        step = graph.steps[step].parent
    return list(reversed(chain))


def assemble(graph: StepGraph, stage_index: int, results: dict[int, StepResult],
             epoch: int | None = None) -> tuple[bytes, bytes, tuple]:
    """(config JSON, manifest JSON, layers) — byte-identical for identical inputs and cache records; ``epoch``
    (SOURCE_DATE_EPOCH) is then the created time of the config and every history line."""
    stage = graph.stages[stage_index]
    layers: list = []
    created = stage.base_created
    for step_id in _chain(graph, stage.last_step):
        result = results[step_id]
        layers.extend(result.layers)
        if graph.steps[step_id].kind != "source":
            created = max(created, result.created)
    history = list(stage.config.history[:stage.base_history_len])
    last_time = stage.base_created
    for item in stage.history:
        if item.step is None:
            history.append(HistoryEntry(item.created_by, True, last_time if epoch is None else epoch))
            continue
        result = results[item.step]
        last_time = result.created
        history.append(HistoryEntry(item.created_by + " # buildkit" if graph.steps[item.step].kind == "exec"
                                    else item.created_by, not result.layers,
                                    result.created if epoch is None else epoch))
    config = replace(stage.config, history=tuple(history), diff_ids=tuple(l.diff_id for l in layers))
    config_bytes = canonical_json(config.to_oci(created if epoch is None else epoch))
    return config_bytes, layers_manifest(config_bytes, layers), tuple(layers)


def layers_manifest(config_bytes: bytes, layers: list) -> bytes:
    import hashlib  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": l.blob.media_type, "digest": l.blob.digest, "size": l.blob.size} for l in layers],
    }
    return canonical_json(manifest)



def exportable(store: Store, record: ImageRecord, compression: str = "gzip",
               cancelled: Callable[[], bool] | None = None,
               progress: Callable[[int, int], None] | None = None) -> ImageRecord:
    """``record`` (a cache.ImageRecord) as it leaves the store: its lazily committed layers (uncompressed tar
    descriptors, digest = diff_id) made into blobs in ``compression`` through `Store.layer_blob`, and the manifest
    listing them made and stored now (its digest exists from here on). Layers pulled or written eagerly stay as
    they are. The config, and so the image id, does not change; an image with no lazy layer is returned as is."""
    layers = exportable_layers(store, record.layers, compression, cancelled, progress)
    if layers == tuple(record.layers):
        return record
    with store.open_blob(record.config.digest) as fh:
        config = fh.read()
    manifest = layers_manifest(config, list(layers))
    desc = replace(store.put_blob(manifest), media_type=MANIFEST_MEDIA_TYPE)
    return replace(record, manifest=desc, layers=layers)


def exportable_layers(store: Store, layers: Sequence[Layer], compression: str,
                      cancelled: Callable[[], bool] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> tuple[Layer, ...]:
    """``layers`` with each lazy one (an uncompressed tar not written yet) as a blob in ``compression``."""
    from cache.model import MEDIA_TYPE_LAYER_TAR  # lazy: saves ~31 ms at start-up

    return tuple(store.layer_blob(layer, compression, cancelled, progress) if layer.blob.media_type == MEDIA_TYPE_LAYER_TAR
                 else layer for layer in layers)
