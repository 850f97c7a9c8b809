"""`pybuild save|load|pull|push`: images in and out of the store as docker's commands move them.

`save` writes a `docker save` archive that is also an OCI layout (builder/export/docker_archive.py), or with
`--format oci-archive` the plain OCI layout tar. `load` reads docker archives (with or without index.json, as
docker before and after 25 writes them), OCI layout tars and OCI layout directories, gzip/bzip2/xz-compressed or
not, from a file or stdin. Every blob is checked against its digest and every layer against its diff_id before
the image is recorded, so a loaded image has the id (config digest) it was saved with.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from builder.export.atomic import atomic_file
from builder.cliparse import CommandLineError
from builder.cliparse import parser as _parser
from builder.errors import PybuildError
from builder.export.docker_archive import familiar_name
from builder.imagecmd import find_image, load_images
from builder.plan.bases import REF_NAME, normalize_name

if TYPE_CHECKING:
    from cache import Descriptor, ImageRecord, Store

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
IMAGE_NAME = "io.containerd.image.name"


class LoadError(PybuildError):
    reference = "bad-image-archive"


def _refuse_terminal(stream, what: str, flag: str) -> None:
    if stream.isatty():
        raise CommandLineError(f"refusing to {what} a terminal", hint=f"redirect it, or use {flag} FILE")


def save_main(argv: list[str]) -> int:
    # lazy: saves ~28 ms at start-up
    from builder.export.docker_archive import write_images_to
    from cache import Store

    p = _parser("pybuild save", "Write images to a tar archive (docker load's format; stdout by default).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", help="write to this file (atomically) instead of stdout")
    p.add_argument("--format", choices=("docker-archive", "oci-archive"), default="docker-archive",
                   help="oci-archive: the OCI layout tar without docker's manifest.json")
    args = p.parse_args(argv)
    if not args.output:
        _refuse_terminal(sys.stdout, "write an archive to", "-o")
    with Store.open(args.root) as store:
        images = load_images(store)
        chosen: dict[str, tuple] = {}
        for ref in args.images:
            image, name = find_image(images, ref)
            record, names = chosen.setdefault(image.record.manifest.digest, (image.record, []))
            if name and name not in names:
                names.append(name)
        pairs = list(chosen.values())  # write_images_to makes the lazy layers' gzip blobs
        docker = args.format == "docker-archive"
        if not args.output:
            write_images_to(sys.stdout.buffer, store, pairs, docker)
            sys.stdout.buffer.flush()
            return 0
        dest = Path(args.output)
        with atomic_file(dest) as fh:
            write_images_to(fh, store, pairs, docker)
    return 0


class Source:
    """Files of an archive or layout directory by name (`blobs/sha256/…`, `index.json`, `manifest.json`)."""

    def __init__(self, path: Path) -> None:
        self.dir = path if path.is_dir() else None
        self.tar = None if self.dir else tarfile.open(path, "r:*")
        self.members = {} if self.tar is None else \
            {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()}

    def has(self, name: str) -> bool:
        return (self.dir / name).is_file() if self.dir else name in self.members

    def open(self, name: str):
        if self.dir:
            path = (self.dir / name).resolve()
            if not path.is_relative_to(self.dir.resolve()):
                raise LoadError(f"the layout names {name!r}, which is outside it")
            return open(path, "rb")
        if name not in self.members:
            raise LoadError(f"the archive has no {name}", hint="is it a docker save or OCI archive?")
        assert self.tar is not None  # not a directory: an archive
        return self.tar.extractfile(self.members[name])

    def json(self, name: str):
        with self.open(name) as fh:
            try:
                return json.loads(fh.read())
            except ValueError as exc:
                raise LoadError(f"{name} in the archive is not JSON: {exc}") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _put(store: Store, src: Source, name: str, expected: str | None) -> Descriptor:
    """Copy one file of the archive into the store; its digest must be ``expected`` (when given)."""
    with src.open(name) as fh:
        desc = store.put_blob_file(fh)
    if expected and desc.digest != expected:
        raise LoadError(f"{name} has digest {desc.digest}, not {expected}: the archive is damaged")
    return desc


def _diff_id(store: Store, desc: Descriptor) -> str:
    from cache.compress import decompressed  # lazy: saves ~30 ms at start-up

    h = hashlib.sha256()
    with store.open_blob(desc.digest) as raw:
        stream = decompressed(raw, desc.digest, desc.media_type)
        while chunk := stream.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _record(store: Store, manifest: bytes | None, config: bytes, layer_descs: list[Descriptor]) -> ImageRecord:
    """Check each layer against the config's diff_ids and record the image (manifest bytes kept as they are;
    None: an OCI manifest is made for the layers, as for an archive of docker before 25)."""
    # lazy: saves ~26 ms at start-up
    from builder.export.image import layers_manifest
    from cache import Layer
    from cache.model import declared_compression

    diff_ids = (json.loads(config).get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layer_descs):
        raise LoadError(f"the image has {len(layer_descs)} layers but its config lists {len(diff_ids)}")
    layers = []
    for desc, diff_id in zip(layer_descs, diff_ids):
        actual = desc.digest if declared_compression(desc.media_type) == "uncompressed" else _diff_id(store, desc)
        if actual != diff_id:
            raise LoadError(f"layer {desc.digest} unpacks to {actual}, not the config's {diff_id}")
        layers.append(Layer(diff_id, desc))
    return store.put_image(manifest or layers_manifest(config, layers), config, layers)


def _load_oci(store: Store, src: Source) -> list[tuple[ImageRecord, list[str]]]:
    # lazy: saves ~43 ms at start-up
    from dataclasses import replace

    from builder.export.pull import choose_platform, host_platform

    out = []
    for entry in src.json("index.json").get("manifests") or []:
        digest, kind = entry["digest"], entry.get("mediaType", "")
        if kind in INDEX_TYPES:
            entry = choose_platform(src.json(_blob(digest)), host_platform())
            digest = entry["digest"]
        body = src.open(_blob(digest)).read()
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise LoadError(f"manifest {digest} does not match its digest: the archive is damaged")
        doc = json.loads(body)
        config = src.open(_blob(doc["config"]["digest"])).read()
        if "sha256:" + hashlib.sha256(config).hexdigest() != doc["config"]["digest"]:
            raise LoadError(f"config {doc['config']['digest']} does not match its digest")
        descs = [replace(_put(store, src, _blob(l["digest"]), l["digest"]), media_type=l["mediaType"])
                 for l in doc.get("layers") or []]
        record = _record(store, body, config, descs)
        notes = entry.get("annotations") or {}
        name = notes.get(IMAGE_NAME) or (notes.get(REF_NAME) if "/" in notes.get(REF_NAME, "") else None)
        out.append((record, [normalize_name(name)] if name else []))
    return out


def _load_docker(store: Store, src: Source) -> list[tuple[ImageRecord, list[str]]]:
    """docker save's manifest.json alone (docker < 25): layer files in any of its layouts."""
    # lazy: saves ~26 ms at start-up
    from dataclasses import replace

    from cache.model import sniffed_media_type

    out = []
    for entry in src.json("manifest.json"):
        config = src.open(entry["Config"]).read()
        descs = []
        for name in entry.get("Layers") or []:
            desc = _put(store, src, name, None)
            with store.open_blob(desc.digest) as fh:  # docker save names no media type: a layer file is sniffed
                descs.append(replace(desc, media_type=sniffed_media_type(fh.read(4))))
        record = _record(store, None, config, descs)
        out.append((record, [normalize_name(t) for t in entry.get("RepoTags") or []]))
    return out


def _blob(digest: str) -> str:
    import re  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise LoadError(f"invalid digest {digest!r} in the archive")
    return f"blobs/sha256/{digest[7:]}"


def load_archive(store: Store, path: Path) -> list[tuple[ImageRecord, list[str]]]:
    """Store every image of the archive or layout at ``path`` and tag it; returns (record, names) pairs."""
    try:
        src = Source(path)
    except (tarfile.TarError, OSError) as exc:
        raise LoadError(f"cannot read {path}: {exc}", hint="load takes a docker save or OCI archive, or an OCI "
                                                             "layout directory") from None
    try:
        if src.has("index.json"):
            loaded = _load_oci(store, src)
            if src.has("manifest.json") and not any(names for _, names in loaded):  # docker's tags are here
                tags = {e["Config"].rsplit("/", 1)[-1]: e.get("RepoTags") or [] for e in src.json("manifest.json")}
                loaded = [(r, [normalize_name(t) for t in tags.get(r.config.digest[7:], [])]) for r, _ in loaded]
        elif src.has("manifest.json"):
            loaded = _load_docker(store, src)
        else:
            raise LoadError(f"{path} is neither a docker archive nor an OCI layout (no index.json or manifest.json)")
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(f"malformed archive {path}: {exc!r}") from None
    finally:
        src.close()
    for record, names in loaded:
        for name in names:
            store.tag(name, record.manifest.digest)
    return loaded


def load_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~24 ms at start-up

    p = _parser("pybuild load", "Load images from a docker or OCI archive (or an OCI layout directory).")
    p.add_argument("-i", "--input", default="-", help="the archive or layout directory (default: stdin)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    args = p.parse_args(argv)
    tmp = None
    try:
        if args.input == "-":
            _refuse_terminal(sys.stdin, "read an archive from", "-i")
            fd, tmp = tempfile.mkstemp(prefix="pybuild-load-")
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(sys.stdin.buffer, fh, 1 << 20)
        path = Path(tmp or args.input)
        with Store.open(args.root) as store:
            loaded = load_archive(store, path)
    finally:
        if tmp:
            os.unlink(tmp)
    if not args.quiet:
        for record, names in loaded:
            print("".join(f"Loaded image: {familiar_name(n)}\n" for n in names) or
                  f"Loaded image ID: {record.config.digest}\n", end="")
    return 0


def pull_main(argv: list[str]) -> int:
    # lazy: saves ~105 ms at start-up
    from builder.build import check_platform
    from builder.export.pull import pull_image
    from builder.export.registry import Registries, RegistryError
    from cache import Store

    p = _parser("pybuild pull", "Pull an image from a registry into the store.")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", default="", help="accepted when it is this machine's platform")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the name")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]")
    args = p.parse_args(argv)
    check_platform(args.platform)
    full = normalize_name(args.name)
    with Store.open(args.root) as store:
        try:
            record = pull_image(store, args.name, Registries(tuple(args.insecure_registry)))
        except RegistryError as exc:
            raise PybuildError(f"pulling {args.name} ({full}) failed: {exc}", reference="pull-failed") from exc
    if not args.quiet:
        print(f"Digest: {record.manifest.digest}\nStatus: Downloaded image for {familiar_name(full)}")
    print(full)
    return 0


def push_main(argv: list[str]) -> int:
    # lazy: saves ~42 ms at start-up
    from builder.export.push import push_image
    from builder.export.registry import Registries, RegistryError
    from cache import Store

    p = _parser("pybuild push", "Push an image to its registry.")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument("-a", "--all-tags", action="store_true", help="push every tag of the repository")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digests")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]")
    args = p.parse_args(argv)
    registries = Registries(tuple(args.insecure_registry))
    with Store.open(args.root) as store:
        images = load_images(store)
        if args.all_tags:
            repo = normalize_name(args.name).rpartition(":")[0] if "@" not in args.name else args.name
            todo = [(i.record, n) for i in images for n in i.names if n.rpartition(":")[0] == repo]
            if not todo:
                raise PybuildError(f"no tag of {args.name} in the store", reference="image-not-found")
        else:
            image, name = find_image(images, args.name)
            todo = [(image.record, name or normalize_name(args.name))]
        for record, name in todo:
            try:
                result = push_image(store, record, name, registries)
            except RegistryError as exc:
                raise PybuildError(f"pushing {name} failed: {exc}", reference="push-failed") from exc
            print(result.summary() if not args.quiet else record.manifest.digest)
    return 0

