"""`pybuild inspect` (docker's image JSON) and `pybuild system df` (docker's usage summary)."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from builder.cliparse import parser as _parser
from builder.errors import PybuildError
from builder.export.docker_archive import familiar_name
from builder.gotemplate import format_item, render_list
from builder.imagecmd import find_image, human, load_images, repo_tag

if TYPE_CHECKING:
    from cache import Store

# docker's Config keys, in its order; an image config's "config" object already uses these names
CONFIG_KEYS = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
               "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
               "WorkingDir", "Entrypoint", "OnBuild", "Labels", "StopSignal", "Shell")
DEFAULTS = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
            "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
            "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None}


def inspect_doc(image) -> dict:
    """docker image inspect's object for one stored image (builder.imagecmd.StoredImage)."""
    cfg = image.config.get("config") or {}
    config = {k: cfg.get(k, DEFAULTS.get(k)) for k in CONFIG_KEYS if k in cfg or k in DEFAULTS}
    tags = [familiar_name(n) for n in image.names if repo_tag(n)[1] != "<none>"]
    repos = dict.fromkeys(repo_tag(n)[0] for n in image.names)
    return {"Id": image.id, "RepoTags": tags,
            "RepoDigests": [f"{repo}@{image.record.manifest.digest}" for repo in repos],
            "Parent": "", "Comment": (image.config.get("history") or [{}])[-1].get("comment", ""),
            "Created": image.config.get("created", ""), "DockerVersion": "", "Author": image.config.get("author", ""),
            "Config": config, "Architecture": image.config.get("architecture", ""),
            **({"Variant": image.config["variant"]} if image.config.get("variant") else {}),
            "Os": image.config.get("os", ""), "Size": image.size,
            "GraphDriver": {"Data": None, "Name": "overlayfs"},
            "RootFS": {"Type": "layers", "Layers": list((image.config.get("rootfs") or {}).get("diff_ids") or [])},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
            "Descriptor": {"mediaType": image.record.manifest.media_type, "digest": image.record.manifest.digest,
                           "size": image.record.manifest.size}}


def inspect_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~26 ms at start-up

    p = _parser("pybuild inspect", "Show images as docker image inspect does (a JSON array).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--format", help="a Go template, e.g. '{{.Id}}' or '{{json .Config}}'")
    p.add_argument("--type", choices=("image",), default="image", help="only images exist in pybuild")
    args = p.parse_args(argv)
    docs, missing = [], []
    with Store.open(args.root) as store:
        images = load_images(store)
        for ref in args.images:
            try:
                docs.append(inspect_doc(find_image(images, ref)[0]))
            except PybuildError as exc:
                missing.append(exc)
    if args.format:
        sys.stdout.write("".join(format_item(args.format, d) + "\n" for d in docs))
    else:
        sys.stdout.write(json.dumps(docs, indent=4) + "\n")
    if missing:
        raise missing[0] if len(missing) == 1 else PybuildError(
            "; ".join(e.message for e in missing), reference="image-not-found")
    return 0


def df_rows(store: Store) -> list[dict]:
    """docker system df's rows (Images, Build Cache) with byte counts beside the human sizes."""
    usage = store.usage()
    images = load_images(store)
    seen: dict[str, int] = {}
    for image in images:
        r = image.record
        for desc in [r.manifest, r.config, *(l.blob for l in r.layers)]:
            seen[desc.digest] = desc.size
    tagged_blobs: dict[str, int] = {}
    for image in images:
        if image.names:
            r = image.record
            for desc in [r.manifest, r.config, *(l.blob for l in r.layers)]:
                tagged_blobs[desc.digest] = desc.size
    image_bytes = sum(seen.values())
    cache_bytes = max(0, usage["total"] - image_bytes)
    dangling = sum(size for d, size in seen.items() if d not in tagged_blobs)
    records = store.records()
    rows = [("Images", len(images), sum(1 for i in images if i.names), image_bytes, min(dangling, image_bytes)),
            ("Containers", 0, 0, 0, 0), ("Local Volumes", 0, 0, 0, 0),
            ("Build Cache", len(records), 0, cache_bytes, min(usage["reclaimable"], cache_bytes))]
    return [{"Type": t, "TotalCount": str(n), "Active": str(a), "Size": human(s),
             "Reclaimable": human(rec) + (f" ({rec * 100 // s}%)" if s and t != "Build Cache" else ""),
             "SizeBytes": s, "ReclaimableBytes": rec} for t, n, a, s, rec in rows]


def df_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~26 ms at start-up

    p = _parser("pybuild system df", "Show the store's disk usage as docker system df does.")
    p.add_argument("--format", help="table (default), json, or a Go template such as '{{.Type}} {{.Size}}'")
    p.add_argument("-v", "--verbose", action="store_true", help="also every image (as `pybuild images`)")
    args = p.parse_args(argv)
    with Store.open(args.root) as store:
        rows = df_rows(store)
        total = store.usage()["total"]
    fmt = args.format or "table"
    if fmt == "table":
        fmt = "table {{.Type}}\\t{{.TotalCount}}\\t{{.Active}}\\t{{.Size}}\\t{{.Reclaimable}}"
    sys.stdout.write(render_list(fmt, rows, {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE",
                                             "Size": "SIZE", "Reclaimable": "RECLAIMABLE"}))
    if args.format in (None, "table") and args.verbose:
        sys.stdout.write(f"\nStore total: {human(total)} ({total} bytes)\n")
    return 0
