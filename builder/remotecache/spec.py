"""`--cache-to` / `--cache-from` specs in buildx's CSV syntax, parsed into `CacheSpec` (one table of keys)."""
from __future__ import annotations

import csv
from dataclasses import dataclass

from builder.errors import UsageError

CACHE_HINT = ("supported: type=registry,ref=HOST/REPO[:TAG][,mode=min|max][,compression=gzip|zstd]"
              "[,ignore-error=true][,cache-mounts=ID1,ID2|all] (no TAG: a cache repository shared by key) | type=local,dest=DIR (--cache-to) / src=DIR (--cache-from) | type=inline "
              "(--cache-to; read back with --cache-from IMAGE)")
# the keys each type takes, per direction (buildx ignores unknown keys; pybuild refuses them, as --output does)
CACHE_TO_KEYS = {"registry": {"ref", "mode", "compression", "ignore-error", "registry.insecure", "cache-mounts"},
                 "local": {"dest", "mode", "compression", "ignore-error", "cache-mounts"},
                 "inline": {"ignore-error"}}
CACHE_FROM_KEYS = {"registry": {"ref", "registry.insecure"}, "local": {"src"}}


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One --cache-to or --cache-from: where the cache is, which steps go there and what a failure does."""

    type: str  # registry | local | inline
    ref: str = ""  # registry: HOST/REPO[:TAG]
    path: str = ""  # local: dest (export) or src (import)
    mode: str = "min"  # min: the exported image's steps; max: every step of every stage
    compression: str = ""  # layers of this compression only ("" = as built)
    ignore_error: bool = False  # a --cache-to failure is a warning instead of a failed build
    insecure: bool = False
    keyed: bool = False  # registry ref without a tag: one entry per step key, shared by images (keyed.py)
    cache_mounts: tuple[str, ...] = ()  # RUN --mount=type=cache ids exported ("all": every one the build used)

    def describe(self) -> str:
        """How the cache is named in messages and --explain-cache: `type=registry,ref=...`."""
        where = f"ref={self.ref}" if self.ref else f"src={self.path}" if self.path else ""
        return f"type={self.type}" + (f",{where}" if where else "")


def _bool(spec: str, flag: str, key: str, value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0", ""):
        raise UsageError(f"invalid {flag} {spec!r}: {key}={value!r} is not true or false", hint=CACHE_HINT)
    return value.lower() in ("true", "1", "")


def parse_cache_spec(spec: str, *, export: bool) -> CacheSpec:
    """`type=registry,ref=r/app:cache,mode=max`; a bare `NAME` is `type=registry,ref=NAME` (buildx)."""
    flag = "--cache-to" if export else "--cache-from"
    fields: dict[str, str] = {}
    parts = next(csv.reader([spec], skipinitialspace=True), [])
    if len(parts) == 1 and "=" not in parts[0] and parts[0].strip():
        fields = {"type": "registry", "ref": parts[0].strip()}
    shorthand = bool(fields)  # `--cache-from IMAGE` names an image (:latest), never a keyed repository
    mounts: list[str] = []
    for part in parts if not fields else ():
        key, sep, value = part.partition("=")
        if not sep and mounts and list(fields)[-1] == "cache-mounts":  # cache-mounts=ID1,ID2: ids go on
            mounts += part.strip().split(",")
            continue
        if not sep:
            raise UsageError(f"invalid {flag} {spec!r}: expected key=value pairs", hint=CACHE_HINT)
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "cache-mounts":
            mounts = value.strip().split(",")
    kind = fields.pop("type", "registry" if "ref" in fields else "")
    table = CACHE_TO_KEYS if export else CACHE_FROM_KEYS
    if kind not in table:
        what = f"type {kind!r} is unsupported here" if kind else "type= is missing"
        raise UsageError(f"invalid {flag} {spec!r}: {what}", hint=CACHE_HINT)
    unknown = sorted(set(fields) - table[kind])
    if unknown:
        raise UsageError(f"invalid {flag} {spec!r}: type={kind} does not take {', '.join(unknown)}", hint=CACHE_HINT)
    mode = fields.get("mode", "min")
    if mode not in ("min", "max"):
        raise UsageError(f"invalid {flag} {spec!r}: mode={mode!r}: want min or max", hint=CACHE_HINT)
    compression = fields.get("compression", "")
    if compression not in ("", "gzip", "zstd"):
        raise UsageError(f"invalid {flag} {spec!r}: compression={compression!r}: want gzip or zstd", hint=CACHE_HINT)
    path = fields.get("dest" if export else "src", "")
    keyed = False
    mounts = [m.strip() for m in mounts if m.strip()]
    if "cache-mounts" in fields and (not mounts or ("all" in mounts and len(mounts) > 1)):
        raise UsageError(f"invalid {flag} {spec!r}: cache-mounts= wants the ids of RUN --mount=type=cache mounts "
                         "or all", hint=CACHE_HINT)
    if kind == "registry":
        if not fields.get("ref"):
            raise UsageError(f"invalid {flag} {spec!r}: type=registry needs ref=HOST/REPO[:TAG]", hint=CACHE_HINT)
        from builder.export.reference import Reference  # lazy: saves ~54 ms at start-up

        Reference.parse(fields["ref"])
        last = fields["ref"].rsplit("/", 1)[-1]
        keyed = not shorthand and "/" in fields["ref"] and ":" not in last and "@" not in last
    if kind == "local" and not path:
        raise UsageError(f"invalid {flag} {spec!r}: type=local needs {'dest' if export else 'src'}=DIR",
                         hint=CACHE_HINT)
    return CacheSpec(kind, ref=fields.get("ref", ""), path=path, mode=mode, compression=compression,
                     ignore_error=_bool(spec, flag, "ignore-error", fields.get("ignore-error", "false")),
                     insecure=_bool(spec, flag, "registry.insecure", fields.get("registry.insecure", "false")),
                     keyed=keyed, cache_mounts=tuple(mounts))
