"""Resolve a FROM reference to a base image's config and layers: scratch, an OCI layout, the local store, or a
registry (through the ``fetch`` callback: builder/export/pull.py pulls into the store)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from builder.errors import ImageNotFoundError, PybuildError
from builder.plan.imageconfig import ImageConfig, host_architecture, parse_time
from builder.plan.steps import LayerRef, SourceOp

if TYPE_CHECKING:
    from cache import Store

OCI_LAYOUT_PREFIX = "oci-layout://"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class BaseImage:
    """A FROM's image: its config, the step that provides its filesystem (None for scratch), and when it was made."""

    config: ImageConfig
    source: SourceOp | None  # None for scratch
    created: float = 0.0


SCRATCH = BaseImage(ImageConfig(), None)


def normalize_name(name: str) -> str:
    """docker's reference normalisation: `me/app` → `docker.io/me/app:latest`, `app` → `docker.io/library/app`."""
    name = name.strip()
    digest = ""
    if "@" in name:
        name, digest = name.split("@", 1)
        digest = "@" + digest
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        repo = name if sep else f"library/{name}"
        domain = "docker.io"
    else:
        domain, repo = first, rest
    if ":" not in repo.rsplit("/", 1)[-1] and not digest:
        repo += ":latest"
    return f"{domain}/{repo}{digest}"


def split_tag(name: str) -> tuple[str, str]:
    """`docker.io/me/app:v1` → (`docker.io/me/app`, `v1`)."""
    repo, _, tag = name.rpartition(":")
    if "/" in tag or not repo:
        return name, "latest"
    return repo, tag


def _layers(manifest: dict, diff_ids: list[str]) -> tuple[LayerRef, ...]:
    layers = manifest.get("layers") or []
    if len(layers) != len(diff_ids):
        raise PybuildError("base image is inconsistent: manifest and config disagree on the number of layers",
                           reference="bad-base-image")
    return tuple(LayerRef(l.get("mediaType", ""), l["digest"], int(l["size"]), d) for l, d in zip(layers, diff_ids))


def resolve_oci_layout(ref: str) -> BaseImage:
    """An `oci-layout:///path[:tag|@sha256:...]` the operator named: index → manifest → config, each verified
    against the digest and size that names it (builder/plan/layout.py), malformed JSON a clear error."""
    from builder.plan import layout as oci  # lazy: saves ~2 ms at start-up

    path, tag, digest = oci.split_ref(ref[len(OCI_LAYOUT_PREFIX):])
    if not os.path.isdir(path):
        raise ImageNotFoundError(f"OCI layout {path} is not a directory",
                                 hint="pass a directory written by `pybuild --output type=oci,dest=DIR`")
    layout = os.path.realpath(path)
    desc = oci.choose_manifest(layout, tag, digest, host_architecture())
    # lazy: saves <1 ms at start-up (its modules are loaded by then)
    from builder import imagejson  # the shape of every document is checked before it is used

    manifest = oci.read_json_blob(layout, desc, f"OCI layout {path}: manifest")
    config_doc = oci.read_json_blob(layout, manifest.get("config"), f"OCI layout {path}: config")
    try:
        imagejson.manifest_parts(manifest, f"OCI layout {path}: manifest {desc['digest']}")
        imagejson.image_config(config_doc, f"OCI layout {path}: config")
    except imagejson.BadImageJSON as exc:
        raise oci.LayoutError(exc.message) from None
    layers = manifest.get("layers") or []
    if not isinstance(layers, list):
        raise oci.LayoutError(f"OCI layout {path}: manifest {desc['digest']} has no layers list")
    for layer in layers:
        oci.descriptor(layer, f"OCI layout {path}: layer")
    try:
        config = ImageConfig.from_oci(config_doc)
        created = parse_time(config_doc.get("created"))
        refs = _layers(manifest, list(config.diff_ids))
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise oci.LayoutError(f"OCI layout {path}: the image config or manifest is malformed ({exc})") from None
    except PybuildError as exc:  # name the layout the inconsistency is in
        raise oci.LayoutError(f"OCI layout {path}: {exc.message}") from None
    source = SourceOp(ref=ref, manifest_digest=desc["digest"], layers=refs, layout_dir=layout,
                      image_id=manifest["config"]["digest"])
    return BaseImage(config, source, created)


def resolve_local(store: Store, name: str) -> BaseImage | None:
    record = store.resolve(normalize_name(name))
    if record is None:
        return None
    with store.open_blob(record.manifest.digest) as fh:
        manifest = json.loads(fh.read())
    with store.open_blob(record.config.digest) as fh:
        config_doc = json.loads(fh.read())
    config = ImageConfig.from_oci(config_doc)
    source = SourceOp(ref=name, manifest_digest=record.manifest.digest, image_id=record.config.digest,
                      layers=_layers(manifest, list(config.diff_ids)))
    return BaseImage(config, source, parse_time(config_doc.get("created")))


def resolve_base(store: Store, ref: str, *, pull: bool = False,
                 fetch: Callable[[str], object] | None = None) -> BaseImage:
    """scratch, the local store, else (or always with ``pull``) ``fetch(ref)``; never a host path (`scheme://`).

    ``fetch`` brings the image into the store under its normalised name (build.py passes the registry pull,
    builder/export/pull.py, so plan/ need not import export/); any PybuildError it raises is reported as this
    base image's. A fetched image is found locally by the next build."""
    if ref == "scratch":
        return SCRATCH
    if "://" in ref:  # host paths and other sources reach a build only through --build-context
        raise ImageNotFoundError(f"{ref!r} is not an image reference",
                                 hint="hand it to the build with --build-context NAME=" + ref + " and use NAME")
    if not pull:
        found = resolve_local(store, ref)
        if found is not None:
            return found
    if fetch is None:
        raise ImageNotFoundError(f"base image {ref!r} is not in the local store ({store.root})",
                                 hint="build it first with `pybuild -t NAME`, or pass "
                                      "--build-context NAME=oci-layout:///DIR[:tag]")
    try:
        fetch(ref)
    except PybuildError as exc:
        where = f"pulling {ref!r}" if pull else f"{ref!r} is not in the local store ({store.root}) and pulling it"
        full = normalize_name(ref)
        raise ImageNotFoundError(f"base image {where}{f' ({full})' if full != ref else ''} failed: {exc.message}",
                                 hint=exc.hint or "build it first with `pybuild -t NAME`, use --build-context "
                                                  "NAME=oci-layout:///DIR, or check the name and that its registry "
                                                  "is up") from exc
    found = resolve_local(store, ref)
    if found is None:
        raise ImageNotFoundError(f"base image {ref!r} was pulled but is not in the store under that name")
    return found
