"""RUN --mount=type=cache contents in a remote cache: `--cache-to ...,cache-mounts=ID1,ID2|all` (opt-in per id).

Export: each chosen mount the build used (one without from=: its directory is keyed by its id alone) is written as
a canonical layer tar (cache/layertar.py), compressed as the cache's layers, under a shared hold so `cache prune`
leaves it alone. Import: before the first RUN that uses a mount the store does not have yet, its content is fetched
(checked against its digest), and unpacked by the store's safe unpacker (cache/unpack.py: nothing is ever written
through a symlink, no absolute names or `..`) into a private directory that is renamed into place only while no
build holds the mount and only if it still does not exist (cache.cachemounts.restore): a mount a concurrent build
uses or wrote is never replaced. A damaged or hostile tar is a warning, and the RUN starts with an empty mount.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import PybuildError

if TYPE_CHECKING:
    from cache import Store


def used_mounts(graph) -> dict:
    """id → RunMount of every cache mount without from= the graph's RUNs use (the first one of each id)."""
    from builder.plan.steps import ExecOp  # lazy: saves ~56 ms at start-up

    found: dict = {}
    for step in graph.steps:
        if isinstance(step.op, ExecOp):
            for m in step.op.mounts:
                if m.type == "cache" and m.from_stage is None:
                    found.setdefault(m.id, m)
    return found


def chosen(spec, graph, warn) -> list[str]:
    """The mount ids ``spec`` exports: its cache-mounts= ids the build used, or all of them."""
    if not spec.cache_mounts:
        return []
    used = used_mounts(graph)
    if spec.cache_mounts == ("all",):
        return sorted(used)
    for mount_id in spec.cache_mounts:
        if mount_id not in used:
            warn(f"--cache-to {spec.describe()}: cache-mounts= names {mount_id!r}, which no RUN --mount=type=cache "
                 f"of this build uses: not exported")
    return [m for m in spec.cache_mounts if m in used]


def mount_layer(store: Store, mount_id: str, compression: str):
    """The Layer of cache mount ``mount_id``'s content as it is now (None: the store has no such mount)."""
    # lazy: saves ~78 ms at start-up
    from cache import Layer
    from cache.cachemounts import DIR, hold, name_for
    from cache.compress import LayerSink
    from cache.layertar import write_layer

    name = name_for(mount_id)
    with hold(store.root, name):  # `cache prune` does not remove it while it is read
        path = store.root / DIR / name
        if path.is_symlink() or not path.is_dir():
            return None
        sink = LayerSink(store._blobs, compression or "gzip")  # noqa: SLF001 (the store's blob area)
        try:
            write_layer(path, sink)
            diff_id, desc = sink.finish()
        except BaseException:
            sink.discard()
            raise
    return Layer(str(diff_id), desc)


def export_layers(spec, store: Store, graph, warn, remote=None) -> list[tuple[str, object]]:
    """(id, Layer) of the mounts ``spec`` exports; a mount that cannot be read is a warning, not a failure. A
    mount this store does not have (no RUN using it ran here) keeps the content a --cache-from had for it."""
    from cache.errors import StoreError  # lazy: saves ~53 ms at start-up

    out = []
    for mount_id in chosen(spec, graph, warn):
        try:
            layer = mount_layer(store, mount_id, spec.compression)
        except (StoreError, OSError) as exc:
            warn(f"--cache-to {spec.describe()}: cache mount {mount_id!r} not exported: {exc}")
            continue
        if layer is None:
            found = remote.mount(mount_id) if remote is not None else None
            if found is None:
                continue
            layer = found[0]
        out.append((mount_id, layer))
    return out


def restore_mounts(remote, store: Store, step) -> None:
    """Restore the cache mounts of ``step`` (a RUN about to run) that the store lacks and a --cache-from has."""
    from cache.cachemounts import DIR, name_for  # lazy: saves ~50 ms at start-up

    for m in step.op.mounts:
        if m.type != "cache" or m.from_stage is not None or m.id in remote.tried_mounts:
            continue
        remote.tried_mounts.add(m.id)
        name = name_for(m.id)
        if os.path.lexists(store.root / DIR / name):
            continue  # the store's own mount wins: it is at least as new
        found = remote.mount(m.id)
        if found is not None:
            _restore_one(remote, store, m, name, *found)


def _restore_one(remote, store: Store, m, name: str, layer, source) -> None:
    # lazy: saves ~69 ms at start-up
    from cache.cachemounts import restore
    from cache.compress import decompressed
    from cache.errors import StoreError
    from cache.unpack import unpack_layer

    what = f"cache {source.spec.describe()}: cache mount {m.id!r}"
    if not remote.fetch(store, layer):
        return  # fetch warned

    def fill(tmp: Path) -> None:
        os.chmod(tmp, m.mode if m.mode is not None else 0o755)
        os.chown(tmp, m.uid or 0, m.gid or 0)
        with store.open_blob(layer.blob.digest) as blob:
            stats = unpack_layer(decompressed(blob, layer.blob.digest, layer.blob.media_type), tmp, compressed=layer.blob.size)
        if str(stats.diff_id) != layer.diff_id:
            raise StoreError(f"its content unpacks to {stats.diff_id}, not the {layer.diff_id} its entry says")

    try:
        restore(store.root, name, m.id, fill)
    except (StoreError, PybuildError, OSError) as exc:
        remote.warn(f"{what} cannot be restored, the RUN starts with an empty mount: "
                    f"{getattr(exc, 'message', None) or exc}")
