"""Resolve a FROM reference to a base image's config and layers: scratch, an OCI layout, the local store, or a
registry (through the ``fetch`` callback: builder/export/pull.py pulls into the store)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImageNotFoundError, PybuildError
from builder.plan.imageconfig import ImageConfig, parse_time
from builder.plan.steps import LayerRef, SourceOp

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


def _read_blob(layout: Path, digest: str) -> bytes:
    """A blob of the layout: a regular file of at most imagejson.MAX_DOCUMENT bytes under blobs/sha256."""
    from builder.context.inputs import read_confined
    from builder.imagejson import DIGEST, MAX_DOCUMENT

    if not DIGEST.fullmatch(digest):
        raise PybuildError(f"OCI layout {layout}: {digest[:80]!r} is not a sha256 digest", reference="bad-image-json")
    return read_confined(str(layout / "blobs" / "sha256" / digest[7:]), what="blob", limit=MAX_DOCUMENT)


def resolve_oci_layout(ref: str) -> BaseImage:
    body = ref[len(OCI_LAYOUT_PREFIX):]
    path, tag = body, None
    if ":" in os.path.basename(body):
        path, _, tag = body.rpartition(":")
    layout = Path(path)
    from builder import imagejson  # every document is shape-checked: a malformed layout is one clear error

    from builder.context.inputs import read_confined

    if not (layout / "index.json").is_file():
        raise ImageNotFoundError(f"cannot read OCI layout {path}: no index.json",
                                 hint="pass a directory written by `pybuild --output type=oci,dest=DIR`")
    index = imagejson.load(read_confined(str(layout / "index.json"), what="OCI layout index",
                                         limit=imagejson.MAX_DOCUMENT), f"OCI layout {path}: index.json")
    manifests = imagejson.index_entries(index, f"OCI layout {path}: index.json")
    chosen = [m for m in manifests if tag is None or (m.get("annotations") or {}).get(REF_NAME) == tag]
    if not chosen:
        raise ImageNotFoundError(f"OCI layout {path} has no image tagged {tag!r}")
    desc = chosen[0]
    manifest = imagejson.load(_read_blob(layout, desc["digest"]), f"OCI layout {path}: manifest {desc['digest']}")
    config_desc, _ = imagejson.manifest_parts(manifest, f"OCI layout {path}: manifest {desc['digest']}")
    config_doc = imagejson.image_config(
        imagejson.load(_read_blob(layout, config_desc["digest"]), f"OCI layout {path}: config"),
        f"OCI layout {path}: config {config_desc['digest']}")
    config = ImageConfig.from_oci(config_doc)
    source = SourceOp(ref=ref, manifest_digest=desc["digest"], layers=_layers(manifest, list(config.diff_ids)),
                      layout_dir=str(layout.resolve()))
    return BaseImage(config, source, parse_time(config_doc.get("created")))


def resolve_local(store, name: str) -> BaseImage | None:
    record = store.resolve(normalize_name(name))
    if record is None:
        return None
    with store.open_blob(record.manifest.digest) as fh:
        manifest = json.loads(fh.read())
    with store.open_blob(record.config.digest) as fh:
        config_doc = json.loads(fh.read())
    config = ImageConfig.from_oci(config_doc)
    source = SourceOp(ref=name, manifest_digest=record.manifest.digest,
                      layers=_layers(manifest, list(config.diff_ids)))
    return BaseImage(config, source, parse_time(config_doc.get("created")))


def resolve_base(store, ref: str, *, pull: bool = False, fetch: Callable[[str], object] | None = None) -> BaseImage:
    """scratch, an `oci-layout://` directory, the local store, else (or always with ``pull``) ``fetch(ref)``.

    ``fetch`` brings the image into the store under its normalised name (build.py passes the registry pull,
    builder/export/pull.py, so plan/ need not import export/); any PybuildError it raises is reported as this
    base image's. A fetched image is found locally by the next build."""
    if ref == "scratch":
        return SCRATCH
    if ref.startswith(OCI_LAYOUT_PREFIX):
        return resolve_oci_layout(ref)
    if not pull:
        found = resolve_local(store, ref)
        if found is not None:
            return found
    if fetch is None:
        raise ImageNotFoundError(f"base image {ref!r} is not in the local store ({store.root})",
                                 hint="build it first with `pybuild -t NAME`, or use FROM oci-layout://DIR[:tag]")
    try:
        fetch(ref)
    except PybuildError as exc:
        where = f"pulling {ref!r}" if pull else f"{ref!r} is not in the local store ({store.root}) and pulling it"
        full = normalize_name(ref)
        raise ImageNotFoundError(f"base image {where}{f' ({full})' if full != ref else ''} failed: {exc.message}",
                                 hint=exc.hint or "build it first with `pybuild -t NAME`, use FROM oci-layout://DIR, "
                                                  "or check the name and that its registry is up") from exc
    found = resolve_local(store, ref)
    if found is None:
        raise ImageNotFoundError(f"base image {ref!r} was pulled but is not in the store under that name")
    return found
