"""`pybuild export IMAGE` (the image's filesystem flattened into one tar) and `pybuild import FILE|- [REF]`
(a rootfs tar becomes a one-layer image, docker's `--change` instructions setting its config).

Flattening reads the layer tars top-down once to decide which entry of which layer is visible (whiteouts
`.wh.NAME` hide a lower path, `.wh..wh..opq` a lower directory's content, a non-directory hides whatever a lower
layer had below it, an upper entry wins over a lower one), then writes the visible entries bottom-up, so a hard
link follows its target and a directory comes before its content, with the top-most directory's metadata.
Owners, modes, times, links and xattrs are copied from the layer entries as they are.
"""
from __future__ import annotations

import os
import sys
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from builder.export.atomic import atomic_file
from builder.cliparse import CommandLineError
from builder.cliparse import parser as _parser
from builder.errors import PybuildError
from builder.imagecmd import find_image, load_images
from builder.plan.bases import normalize_name

if TYPE_CHECKING:
    from cache import Layer, Store

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME",
                       "WORKDIR")


def _norm(name: str) -> str:
    return os.path.normpath("/" + name).lstrip("/")


def _ancestors(name: str):
    parts = name.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _open_layer(store: Store, layer: Layer) -> tarfile.TarFile:
    """The layer's tar, from a blob `Store.layer_blob` hands out (made when the layer was committed lazily)."""
    from cache.compress import decompressed  # lazy: saves ~29 ms at start-up

    blob = store.layer_blob(layer, None).blob
    reader = decompressed(store.open_blob(blob.digest), blob.digest, blob.media_type)
    # ignore: stream mode (r|) only reads, but typeshed's tarfile wants a seekable, writable file
    return tarfile.open(fileobj=reader, mode="r|")  # type: ignore[call-overload]


def visible(store: Store,
            layers: list[Layer]) -> tuple[list[set[str]], dict[str, tarfile.TarInfo], list[dict[str, str]]]:
    """Per layer (bottom first), the names it contributes; the top-most entry of each surviving directory; and
    per layer the hard-link targets that are not visible themselves (deleted or replaced above), each with the
    first visible link to it, which then carries the file's content in their place."""
    gone: set[str] = set()  # hidden with everything below
    below: set[str] = set()  # everything below is hidden
    taken: set[str] = set()
    dirs: dict[str, tarfile.TarInfo] = {}
    keep: list[set[str]] = []
    orphans: list[dict[str, str]] = []
    for layer in reversed(layers):
        mine: set[str] = set()
        links: list[tuple[str, str]] = []
        new_gone, new_below = set(), set()
        with _open_layer(store, layer) as tar:
            for info in tar:
                name = _norm(info.name)
                base, parent = os.path.basename(name), os.path.dirname(name)
                if not name:
                    continue
                if base == OPAQUE:
                    new_below.add(parent)
                    continue
                if base.startswith(WHITEOUT):
                    new_gone.add(os.path.join(parent, base[len(WHITEOUT):]))
                    continue
                hidden = name in gone or any(a in gone or a in below for a in _ancestors(name))
                if name in taken:
                    if info.isdir() and name in dirs and not hidden:
                        mine.add(name)  # the directory exists from here up: written here, with the top metadata
                    continue
                if hidden:
                    continue
                mine.add(name)
                taken.add(name)
                if info.isdir():
                    dirs[name] = info
                else:
                    new_below.add(name)
                if info.islnk():
                    links.append((name, _norm(info.linkname)))
        gone |= new_gone
        below |= new_below
        keep.append(mine)
        lost: dict[str, str] = {}
        for name, target in links:
            if target not in mine:
                lost.setdefault(target, name)
        orphans.append(lost)
    keep.reverse()
    orphans.reverse()
    return keep, dirs, orphans


def write_flat(out: BinaryIO, store: Store, layers: list[Layer]) -> None:
    """The merged filesystem of ``layers`` (cache.Layer, bottom first) as one tar stream on ``out``."""
    keep, dirs, orphans = visible(store, layers)
    written: set[str] = set()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dest:
        for layer, names, lost in zip(layers, keep, orphans):
            moved: dict[str, str] = {}  # a hidden link target → the link that now holds its content
            with _open_layer(store, layer) as tar:
                for info in tar:
                    name = _norm(info.name)
                    if name in lost and info.isreg() and lost[name] not in written:
                        moved[name] = lost[name]
                        written.add(lost[name])
                        dest.addfile(info.replace(name=lost[name], deep=False), tar.extractfile(info))
                        continue
                    if name not in names or name in written:
                        continue
                    written.add(name)
                    entry = dirs.get(name, info) if info.isdir() else info
                    entry = entry.replace(name=name, deep=False)
                    if entry.islnk():
                        target = _norm(entry.linkname)
                        entry.linkname = moved.get(target, target)
                    dest.addfile(entry, tar.extractfile(info) if info.isreg() else None)


def export_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~26 ms at start-up

    p = _parser("pybuild export", "Write an image's filesystem, flattened, as one tar (stdout by default).")
    p.add_argument("image")
    p.add_argument("-o", "--output", help="write to this file (atomically)")
    args = p.parse_args(argv)
    if not args.output and sys.stdout.isatty():
        raise CommandLineError("refusing to write a tar to a terminal", hint="redirect it, or use -o FILE")
    with Store.open(args.root) as store:
        image = find_image(load_images(store), args.image)[0]
        layers = list(image.record.layers)
        if not args.output:
            write_flat(sys.stdout.buffer, store, layers)
            sys.stdout.buffer.flush()
            return 0
        dest = Path(args.output)
        with atomic_file(dest) as fh:
            write_flat(fh, store, layers)
    return 0


def change_config(changes: list[str]):
    """docker import --change: Dockerfile instructions (CMD, ENV, …) applied to an empty config."""
    # lazy: saves ~19 ms at start-up
    import grammar
    from builder.plan.bases import SCRATCH
    from builder.plan.planner import plan

    for change in changes:
        word = change.strip().split(None, 1)[0].upper() if change.strip() else ""
        if word not in CHANGE_INSTRUCTIONS:
            raise CommandLineError(f"--change {change!r}: {word or 'an empty line'} is not allowed here",
                                   hint=f"use one of {', '.join(CHANGE_INSTRUCTIONS)}")
    text = "FROM scratch\n" + "".join(c.strip() + "\n" for c in changes)
    graph = plan(grammar.parse(text, filename="--change"), build_args={}, target=None,
                 resolve_image=lambda ref: SCRATCH)
    return graph.stages[graph.target].config


def import_main(argv: list[str]) -> int:
    # lazy: saves ~30 ms at start-up
    import hashlib
    from dataclasses import replace

    from builder.export.image import layers_manifest
    from builder.plan.imageconfig import HistoryEntry, canonical_json
    from cache import Layer, Store
    from cache.compress import decompressed
    from cache.model import MEDIA_TYPE_LAYER_TAR

    p = _parser("pybuild import", "Make a one-layer image of a rootfs tarball (a file, or - for stdin).")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-c", "--change", action="append", default=[], help="a Dockerfile instruction (CMD, ENV, …)")
    p.add_argument("-m", "--message", default="", help="the history comment")
    p.add_argument("--platform", default="", help="accepted when it is this machine's platform")
    args = p.parse_args(argv)
    from builder.build import check_platform  # lazy: saves ~95 ms at start-up

    check_platform(args.platform)
    if args.file.startswith(("http://", "https://")):
        raise CommandLineError("import from a URL is not supported", hint="download it, then import the file")
    config = change_config(args.change)
    if args.file == "-" and sys.stdin.isatty():
        raise CommandLineError("refusing to read a tar from a terminal", hint="pipe one in, or give FILE")
    src = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")
    with Store.open(args.root) as store:
        with src:
            blob = store.put_blob_file(decompressed(src, args.file))  # a file has no media type: sniffed
        try:
            with tarfile.open(store.blob_path(blob.digest)) as tar:
                tar.getmembers()
        except tarfile.TarError as exc:
            raise PybuildError(f"{args.file} is not a tar archive: {exc}", reference="bad-image-archive") from None
        now = time.time()
        layer = Layer(blob.digest, replace(blob, media_type=MEDIA_TYPE_LAYER_TAR))
        history = (HistoryEntry(f"Imported from {args.file}", False, now, args.message),)
        doc = replace(config, diff_ids=(layer.diff_id,), history=history).to_oci(now)
        config_bytes = canonical_json(doc)
        record = store.put_image(layers_manifest(config_bytes, [layer]), config_bytes, [layer])
        if args.reference:
            store.tag(normalize_name(args.reference), record.manifest.digest)
    print("sha256:" + hashlib.sha256(config_bytes).hexdigest())
    return 0
