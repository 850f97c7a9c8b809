"""`pybuild images`, `pybuild history IMAGE` and `pybuild cache ls|du|inspect|prune`: the store made visible."""
from __future__ import annotations

import json
import re
import sys
import time
from typing import TYPE_CHECKING

from builder.cliparse import CommandLineError, print_table
from builder.cliparse import parser as _parser
from builder.errors import UsageError

if TYPE_CHECKING:
    from cache import Store

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024 ** 2, "mb": 1000 ** 2, "mib": 1024 ** 2,
          "g": 1024 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4, "tb": 1000 ** 4, "tib": 1024 ** 4}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")


def parse_size(text: str) -> int:
    m = _SIZE.match(text.strip())
    if not m or (m.group(2) or "").lower() not in _UNITS:
        raise UsageError(f"invalid size {text!r}", hint="use e.g. 500MB, 2GiB or 1048576")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def parse_until(text: str) -> float:
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UsageError(f"invalid duration {text!r}", hint="use e.g. 24h, 90m or 7d")
    return total


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1000
    return f"{n}B"


def ago(ts: float) -> str:
    delta = max(0, time.time() - ts)
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= seconds:
            return f"{int(delta // seconds)}{unit} ago"
    return f"{int(delta)}s ago"


def show_table(title: str, headers: list[str], rows: list[list[str]], limits: dict[int, int] | None = None) -> None:
    """A rich table on a terminal (cells in ``limits`` cut to that width); plain, whole columns otherwise."""
    # a cell may hold what a Dockerfile named (a cache mount id, a step): its control characters are no escapes
    rows = [["".join(c if c.isprintable() else "?" for c in cell) for cell in row] for row in rows]
    if not sys.stdout.isatty():
        print_table(headers, rows)
        return
    # lazy: saves ~39 ms at start-up
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for col in headers:
        table.add_column(col)
    for row in rows:
        table.add_row(*(Text(cell[:limits[i]] if limits and i in limits else cell) for i, cell in enumerate(row)))
    Console().print(table)


def _referenced(store: Store) -> set[str]:
    """Layer blob digests that some tagged image refers to."""
    used: set[str] = set()
    for _, image in store.images():
        used.update(layer.blob.digest for layer in image.layers)
    return used


def cache_ls(store: Store, fmt: str, sort: str | None = None, filters: list[str] | None = None) -> int:
    """Records and cache mounts: filtered (all must match), sorted, the two sizes labelled."""
    from builder import cachels  # lazy: saves ~1 ms at start-up (only the cache commands use it)

    found = cachels.select(store, cachels.rows(store, _referenced(store), cache_mounts(store)),
                           cachels.parse_filters(filters or []), sort)
    if fmt == "json":
        print(cachels.to_json(found))
        return 0
    show_table("pybuild cache", ["ID", "TYPE", "INSTRUCTION", "STAGE", "UNPACKED", "COMPRESSED", "CREATED",
                                 "LAST USED", "USES", "IN USE"],
               [[r["id"][7:19] if r["id"].startswith("sha256:") else r["id"], r["type"], r["instruction"],
                 str(r["stage"]), human(r["unpacked_size"]), human(r["compressed_size"]), ago(r["created"]),
                 ago(r["last_used"]), str(r["uses"]), "yes" if r["in_use"] else ""] for r in found], {2: 60})
    if sys.stdout.isatty():
        print(cachels.SIZE_NOTE)
    return 0


def cache_mounts(store: Store) -> list[dict]:
    """RUN --mount=type=cache directories (cache/cachemounts.py): persistent across builds, never in a layer."""
    from cache.cachemounts import listing  # lazy: saves ~48 ms at start-up

    return [{"id": "cachemount:" + m.name, "instruction": f"cache mount id={m.id}", "stage": "", "size": m.size,
             "created": m.created, "last_used": m.last_used, "uses": 0, "in_use": False, "type": "cache-mount"}
            for m in listing(store.root)]


def cache_inspect(store: Store, key: str) -> int:
    if key.startswith("cachemount:"):
        rows = [r for r in cache_mounts(store) if r["id"] == key]
        if not rows:
            raise UsageError(f"no cache mount {key!r}", hint="use an id from `pybuild cache ls`")
        print(json.dumps(rows[0], indent=2))
        return 0
    matches = [r for r in store.records() if r.key == key or r.key[7:].startswith(key.removeprefix("sha256:"))]
    if len(matches) != 1:
        raise UsageError(f"{'no' if not matches else 'more than one'} cache record matches {key!r}",
                         hint="use an id from `pybuild cache ls`")
    rec = matches[0]
    doc = {"id": rec.key, "parent": rec.parent_key, "snapshot": rec.snapshot_id, "size": rec.size,
           "layer": rec.layer.blob.digest if rec.layer else None, "created": rec.created,
           "last_used": rec.last_used, "uses": rec.uses, **(rec.description or {})}
    print(json.dumps(doc, indent=2))
    return 0


def cache_main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~70 ms at start-up

    if not argv or argv[0] not in ("ls", "du", "inspect", "prune"):
        if argv and argv[0] in ("-h", "--help"):
            print("usage: pybuild cache ls [--sort size|used|created] [--filter image=|stage=|type=]..."
                  " | du [--verbose] | inspect ID | prune [--all] [--keep-storage SIZE] [--filter until=DUR]")
            return 0
        raise CommandLineError("usage: pybuild cache ls|du|inspect ID|prune [--all] [--keep-storage SIZE] "
                         "[--filter until=DURATION]")
    sub, rest = argv[0], argv[1:]
    p = _parser(f"pybuild cache {sub}")
    if sub == "ls":
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.add_argument("--sort", choices=("size", "used", "created"),
                       help="largest, last used or newest first (default: oldest first)")
        p.add_argument("--filter", action="append", default=[], metavar="image=REF|stage=NAME|type=KIND",
                       help="only records matching it (repeatable: all must match)")
    if sub == "inspect":
        p.add_argument("id")
    if sub == "prune":
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.add_argument("--all", action="store_true")
        p.add_argument("--keep-storage")
        p.add_argument("--filter", action="append", default=[])
    if sub == "du":
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.add_argument("--verbose", action="store_true", help="also list every record and cache mount")
    args = p.parse_args(rest)
    store = Store.open(args.root)
    try:
        if sub == "ls":
            return cache_ls(store, args.format, args.sort, args.filter)
        if sub == "inspect":
            return cache_inspect(store, args.id)
        if sub == "du":
            return cache_du(store, args.format, args.verbose)
        until, only_mounts = None, False
        for f in args.filter:
            key, _, value = f.partition("=")
            if key == "until":
                until = parse_until(value)
            elif key == "type" and value == "cachemount":
                only_mounts = True
            else:
                raise UsageError(f"unknown filter {f!r}", hint="supported: --filter until=24h, --filter type=cachemount")
        keep = parse_size(args.keep_storage) if args.keep_storage else None
        result = store.prune(all=args.all, keep_storage=keep, until=until, cache_mounts_only=only_mounts)
        print(json.dumps(result, indent=2) if args.format == "json" else prune_summary(result))
        return 0
    finally:
        store.close()


def cache_du(store: Store, fmt: str, verbose: bool) -> int:
    """Sizes and counts; with ``verbose`` every record first (buildx du --verbose)."""
    from builder import cachels  # lazy: saves ~1 ms at start-up (only the cache commands use it)

    usage = store.usage()
    found = cachels.rows(store, _referenced(store), cache_mounts(store)) if verbose else []
    if fmt == "json":
        print(json.dumps({**usage, "items": json.loads(cachels.to_json(found))} if verbose else usage, indent=2))
        return 0
    if verbose and found:
        print(cachels.du_verbose(found, human, ago) + "\n")
    print("\n".join(f"{k}: {human(v) if 'byte' in k or k in ('total', 'reclaimable') else v}"
                    for k, v in usage.items()))
    return 0


def prune_summary(result: dict) -> str:
    """What `cache prune` removed, in words (docker's "Total reclaimed space" line last)."""
    kinds = (("records", "cache record"), ("snapshots", "layer snapshot"), ("blobs", "blob"),
             ("images", "untagged image"), ("cache_mounts", "cache mount"))
    removed = [f"{result.get(key, 0)} {name}{'s' if result.get(key, 0) != 1 else ''}" for key, name in kinds]
    return f"Removed: {', '.join(removed)}\nTotal reclaimed space: {human(result.get('reclaimed', 0))}"


IMAGE_SUBCOMMANDS = {"ls": "images", "list": "images", "rm": "rmi", "remove": "rmi", "tag": "tag",
                     "prune": "image prune", "inspect": "inspect", "history": "history", "save": "save",
                     "load": "load", "pull": "pull", "push": "push", "import": "import"}


def group_main(group: str, subs: dict[str, str], argv: list[str]) -> int:
    """`pybuild image SUB` / `pybuild system SUB`: docker's management commands, mapped onto the short ones."""
    from builder.cliparse import suggest  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: pybuild {group} {'|'.join(subs)} ...")
        return 0 if argv else 2
    if argv[0] not in subs:
        close = suggest(argv[0], list(subs))
        raise CommandLineError(f"unknown command 'pybuild {group} {argv[0]}'",
                               hint=f"did you mean `pybuild {group} {close}`?" if close else
                               f"`pybuild {group}` takes {', '.join(subs)}")
    return main(subs[argv[0]], argv[1:])


def main(name: str, argv: list[str]) -> int:
    """The store commands by name (`image prune` and `system df` included)."""
    from builder import imagecmd, imageinfo, imageio, login, rootfs  # lazy: saves ~116 ms at start-up

    handlers = {"cache": cache_main, "images": imagecmd.images_main, "history": imagecmd.history_main,
                "tag": imagecmd.tag_main, "rmi": imagecmd.rmi_main, "image prune": imagecmd.prune_main,
                "inspect": imageinfo.inspect_main, "system df": imageinfo.df_main,
                "save": imageio.save_main, "load": imageio.load_main, "pull": imageio.pull_main,
                "push": imageio.push_main, "export": rootfs.export_main, "import": rootfs.import_main,
                "login": login.login_main, "logout": login.logout_main,
                "image": lambda a: group_main("image", IMAGE_SUBCOMMANDS, a),
                "system": lambda a: group_main("system", {"df": "system df"}, a)}
    return handlers[name](argv)
