"""`pybuild images|tag|rmi|image prune|history`: docker's image commands with their flags and output shapes.

An image is stored once (its manifest digest) and has any number of names (tags, or `repo@sha256:` digest
references); its id is the config digest, as docker's. `rmi` removes names and forgets an image left without
one; its content is freed by the garbage collector when no other image or cache record holds it.
"""
from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from builder.cliparse import CommandLineError
from builder.cliparse import parser as _parser
from builder.errors import ImageNotFoundError, PybuildError
from builder.export.docker_archive import familiar_name
from builder.gotemplate import render_list
from builder.plan.bases import normalize_name, split_tag
from builder.storecmd import parse_until

if TYPE_CHECKING:
    from cache import ImageRecord, Store

NONE = "<none>"
HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
           "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "CreatedBy": "CREATED BY",
           "Comment": "COMMENT", "VirtualSize": "VIRTUAL SIZE", "SharedSize": "SHARED SIZE",
           "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS"}


@dataclass
class StoredImage:
    """An image with its names (normalised), config document and creation time (from its config)."""

    record: ImageRecord
    names: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.record.config.digest

    @property
    def created(self) -> float:
        # lazy: saves <1 ms at start-up (its modules are loaded by then)
        from builder.plan.imageconfig import parse_time

        return parse_time(self.config.get("created")) or self.record.created

    @property
    def size(self) -> int:
        return sum(l.blob.size for l in self.record.layers)


def load_images(store: Store) -> list[StoredImage]:
    """Every stored image with its names, newest first (docker's order)."""
    by_manifest = {r.manifest.digest: StoredImage(r) for r in store.all_images()}
    for name, record in store.images():
        by_manifest.setdefault(record.manifest.digest, StoredImage(record)).names.append(name)
    for image in by_manifest.values():
        with store.open_blob(image.record.config.digest) as fh:
            image.config = json.loads(fh.read())
    return sorted(by_manifest.values(), key=lambda i: (-i.created, i.names))


def find_image(images: list[StoredImage], ref: str) -> tuple[StoredImage, str | None]:
    """(image, the name ``ref`` means or None when it is an id): a name, `repo@sha256:…`, or an id (prefix)."""
    full = None if ref.startswith("sha256:") else normalize_name(ref)  # a name first, as docker: `abc` may be both
    for image in images:
        if full in image.names:
            return image, full
    hexpart = ref.removeprefix("sha256:")
    if re.fullmatch(r"[0-9a-f]{1,64}", hexpart):
        found = [i for i in images if i.id[7:].startswith(hexpart)]
        if len(found) == 1:
            return found[0], None
        if len(found) > 1:
            raise PybuildError(f"image id {ref!r} is ambiguous: {len(found)} images start with it",
                               hint="give more of the id", reference="image-not-found")
    raise ImageNotFoundError(f"no such image: {ref}", hint="`pybuild images` lists the stored images")


def repo_tag(name: str) -> tuple[str, str, str]:
    """(repository, tag, digest) in docker's familiar form; `<none>` where there is none."""
    short = familiar_name(name)
    if "@" in short:
        repo, _, digest = short.partition("@")
        return repo, NONE, digest
    repo, tag = split_tag(short)
    return repo, tag, ""


def human(size: float) -> str:
    """docker's sizes (go-units HumanSizeWithPrecision(size, 3)): 0B, 999kB, 1.12MB, 72.8MB, 1.11GB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if size < 1000 or unit == "PB":
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{size:.3g}PB"


def ago(ts: float, now: float | None = None) -> str:
    """docker's CreatedSince (go-units HumanDuration + " ago"): "About an hour ago", "3 days ago"."""
    seconds = max(0.0, (time.time() if now is None else now) - ts)
    minutes, hours = int(seconds / 60), round(seconds / 3600)
    if seconds < 1:
        text = "Less than a second"
    elif int(seconds) == 1:
        text = "1 second"
    elif seconds < 60:
        text = f"{int(seconds)} seconds"
    elif minutes == 1:
        text = "About a minute"
    elif minutes < 60:
        text = f"{minutes} minutes"
    elif hours == 1:
        text = "About an hour"
    elif hours < 48:
        text = f"{hours} hours"
    elif hours < 24 * 7 * 2:
        text = f"{hours // 24} days"
    elif hours < 24 * 30 * 2:
        text = f"{hours // 24 // 7} weeks"
    elif hours < 24 * 365 * 2:
        text = f"{hours // 24 // 30} months"
    else:
        text = f"{hours // 24 // 365} years"
    return text + " ago"


def created_at(ts: float) -> str:
    """docker's CreatedAt: Go's time.String() of the local time."""
    dt = datetime.fromtimestamp(ts, timezone.utc).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M:%S %z ") + (dt.tzname() or "")


def image_rows(image: StoredImage, no_trunc: bool) -> list[dict]:
    """docker images' fields (`--format`), one row per name; an image without a name is `<none>:<none>`."""
    image_id = image.id if no_trunc else image.id[7:19]
    rows = []
    for name in image.names or [""]:
        repo, tag, digest = repo_tag(name) if name else (NONE, NONE, "")
        rows.append({"Containers": "N/A", "CreatedAt": created_at(image.created),
                     "CreatedSince": ago(image.created), "Digest": digest or image.record.manifest.digest,
                     "ID": image_id, "Repository": repo, "SharedSize": "N/A", "Size": human(image.size),
                     "Tag": tag, "UniqueSize": "N/A", "VirtualSize": human(image.size)})
    return rows


def _glob(pattern: str) -> re.Pattern:
    """Go's path.Match: `*` and `?` stop at `/`."""
    out = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.compile(out + r"\Z")


def filtered(images: list[StoredImage], filters: list[str], repository: str | None) -> list[StoredImage]:
    """docker images --filter reference=|dangling=|before=|since=|label= and the REPOSITORY[:TAG] argument."""
    kept = list(images)
    refs = ([repository] if repository else []) + [v for k, v in (f.partition("=")[::2] for f in filters)
                                                     if k == "reference"]
    for f in filters:
        key, _, value = f.partition("=")
        if key == "dangling":
            if value not in ("true", "false", "1", "0"):
                raise CommandLineError(f"--filter dangling={value!r}: expected true or false")
            kept = [i for i in kept if (not i.names) == (value in ("true", "1"))]
        elif key in ("before", "since"):
            mark = find_image(images, value)[0].created
            kept = [i for i in kept if (i.created < mark if key == "before" else i.created > mark)]
        elif key == "label":
            k, _, v = value.partition("=")
            labels = lambda i: (i.config.get("config") or {}).get("Labels") or {}  # noqa: E731
            kept = [i for i in kept if k in labels(i) and (not v or labels(i)[k] == v)]
        elif key != "reference":
            raise CommandLineError(f"unknown filter {key!r}", hint="images takes reference=, dangling=, before=, "
                                                                    "since=, label=")
    for pattern in refs:
        rx = _glob(pattern)
        for image in kept:
            image.names = [n for n in image.names
                           if rx.match(repo_tag(n)[0]) or rx.match(familiar_name(n))
                           or (":" not in pattern and rx.match(split_tag(familiar_name(n))[0]))]
        kept = [i for i in kept if i.names]
    return kept


def images_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~27 ms at start-up

    p = _parser("pybuild images", "List images.")
    p.add_argument("repository", nargs="?", help="only this REPOSITORY[:TAG] (wildcards as in --filter reference=)")
    p.add_argument("-q", "--quiet", action="store_true", help="only the image ids")
    p.add_argument("-a", "--all", action="store_true", help="accepted for docker: every image is listed")
    p.add_argument("--digests", action="store_true", help="show the manifest digests")
    p.add_argument("--no-trunc", action="store_true", help="whole image ids")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="reference=PATTERN, dangling=true|false, before=IMAGE, since=IMAGE, label=K[=V]")
    p.add_argument("--format", help="table (default), json, or a Go template such as '{{.Repository}}:{{.Tag}}'")
    args = p.parse_args(argv)
    with Store.open(args.root) as store:
        images = filtered(load_images(store), args.filter, args.repository)
    rows = [row for image in images for row in image_rows(image, args.no_trunc)]
    if args.quiet:
        sys.stdout.write("".join(i + "\n" for i in dict.fromkeys(r["ID"] for r in rows)))
        return 0
    fmt = args.format or "table"
    if fmt == "table":
        fmt = "table {{.Repository}}\\t{{.Tag}}\\t" + ("{{.Digest}}\\t" if args.digests else "") + \
              "{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}"
    sys.stdout.write(render_list(fmt, rows, HEADERS))
    return 0


def tag_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~27 ms at start-up

    p = _parser("pybuild tag", "Give an image another name: pybuild tag SOURCE[:TAG] TARGET[:TAG].")
    p.add_argument("source")
    p.add_argument("target")
    args = p.parse_args(argv)
    from builder.export.reference import Reference  # lazy: saves ~1 ms at start-up

    target = normalize_name(args.target)
    Reference.parse(target)
    with Store.open(args.root) as store:
        image, _ = find_image(load_images(store), args.source)
        store.tag(target, image.record.manifest.digest)
    return 0


def rmi_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~27 ms at start-up

    p = _parser("pybuild rmi", "Remove image names; an image left without a name is removed (its content "
                               "is freed by the next prune).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="remove every name of an image given by id")
    p.add_argument("--no-prune", action="store_true", help="accepted for docker")
    args = p.parse_args(argv)
    failed = None
    with Store.open(args.root) as store:
        for ref in args.images:
            try:
                remove(store, ref, args.force)
            except PybuildError as exc:  # as docker: report each failure, go on, exit 1 at the end
                if len(args.images) == 1:
                    raise
                print(f"error: {exc.message}", file=sys.stderr)
                failed = exc
    if failed is not None:
        raise PybuildError(f"could not remove {'an image' if len(args.images) > 1 else args.images[0]}",
                           hint=failed.hint, reference="image-not-removed")
    return 0


def remove(store: Store, ref: str, force: bool) -> None:
    """docker rmi of one name or id: prints `Untagged: NAME` per name and `Deleted: ID` for the image."""
    image, name = find_image(load_images(store), ref)
    if name is None and len({repo_tag(n)[0] for n in image.names}) > 1 and not force:
        raise PybuildError(f"conflict: unable to delete {ref} (must be forced) - image is referenced in multiple "
                           "repositories", hint="remove it by name, or with -f every name", reference="image-in-use")
    for full in [name] if name else list(image.names):
        store.untag(full)
        print(f"Untagged: {familiar_name(full)}")
    if store.remove_image(image.record.manifest.digest):
        print(f"Deleted: {image.id}")


def prune_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~27 ms at start-up

    p = _parser("pybuild image prune", "Remove images without a tag (with -a: also those only named by digest) "
                                       "and the content only they held.")
    p.add_argument("-a", "--all", action="store_true", help="also images that have only digest names")
    p.add_argument("-f", "--force", action="store_true", help="accepted for docker: pybuild never asks")
    p.add_argument("--filter", action="append", default=[], metavar="until=DURATION")
    args = p.parse_args(argv)
    until = None
    for f in args.filter:
        key, _, value = f.partition("=")
        if key != "until":
            raise CommandLineError(f"unknown filter {f!r}", hint="image prune takes --filter until=24h")
        until = time.time() - parse_until(value)
    lines, spared = [], False
    with Store.open(args.root) as store:
        for image in load_images(store):
            digest_only = all(repo_tag(n)[1] == NONE for n in image.names)
            if image.names and not (args.all and digest_only):
                continue
            if until is not None and image.created >= until:
                spared = spared or not image.names
                continue
            for full in image.names:
                store.untag(full)
                lines.append(f"untagged: {familiar_name(full)}")
            if store.remove_image(image.record.manifest.digest):
                lines.append(f"deleted: {image.id}")
        # the sweep would take untagged images along (nothing holds them): not while the filter spares one
        result = store.prune(all=False) if not spared else {"reclaimed": 0}
    print("Deleted Images:\n" + "".join(line + "\n" for line in lines) + "\n" if lines else "", end="")
    print(f"Total reclaimed space: {human(result['reclaimed'])}")
    return 0


def history_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~27 ms at start-up

    p = _parser("pybuild history", "Show the history of an image, newest step first.")
    p.add_argument("image")
    p.add_argument("-q", "--quiet", action="store_true", help="only the layer ids")
    p.add_argument("--no-trunc", action="store_true", help="do not cut long instructions")
    p.add_argument("--format", help="table (default), json, or a Go template such as '{{.CreatedBy}}'")
    args = p.parse_args(argv)
    with Store.open(args.root) as store:
        image = find_image(load_images(store), args.image)[0]
        by_layer = {r.layer.diff_id: r.key for r in store.records() if r.layer is not None}
    rows = history_rows(image, by_layer)
    if args.quiet:
        sys.stdout.write("".join(r["ID"] + "\n" for r in rows))
        return 0
    if not args.no_trunc and sys.stdout.isatty() and args.format in (None, "table"):
        rows = [dict(r, CreatedBy=r["CreatedBy"][:45] + "…" if len(r["CreatedBy"]) > 46 else r["CreatedBy"])
                for r in rows]
    fmt = args.format or "table"
    if fmt == "table":
        fmt = "table {{.ID}}\\t{{.CreatedSince}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}"
    sys.stdout.write(render_list(fmt, rows, HEADERS))
    return 0


def history_rows(image: StoredImage, by_layer: dict[str, str]) -> list[dict]:
    """docker history's fields, newest first; ID is the layer's cache record (`<missing>` when none)."""
    from builder.plan.imageconfig import parse_time  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    rows, layers = [], iter(image.record.layers)
    for h in image.config.get("history", []):
        layer = None if h.get("empty_layer") else next(layers, None)
        ts = parse_time(h.get("created"))
        rows.append({"ID": "<missing>", "CreatedAt": created_at(ts), "CreatedSince": ago(ts),
                     "CreatedBy": h.get("created_by", ""), "Size": human(layer.blob.size if layer else 0),
                     "Comment": h.get("comment", ""), "Layer": layer.blob.digest if layer else "",
                     "CacheID": (by_layer.get(layer.diff_id) or "") if layer else ""})
    rows.reverse()
    if rows:
        rows[0]["ID"] = image.id[7:19]
    return rows
