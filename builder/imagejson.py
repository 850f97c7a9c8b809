"""Shape checks of image JSON read from outside (a registry, an OCI layout): an index, a manifest or a config
must have the types the OCI image spec gives its fields before any of them is used, so a broken or hostile
source gives one clear error naming the document and the field, never a TypeError deep inside pybuild."""
from __future__ import annotations

import json
import re
from typing import Any

from builder.errors import PybuildError

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_DOCUMENT = 8 << 20  # bytes: distribution's manifest limit is 4 MiB; configs with long histories are larger
_STRINGS = ("WorkingDir", "User", "StopSignal")
_STRING_LISTS = ("Env", "Cmd", "Entrypoint", "Shell", "OnBuild")
_OBJECTS = ("Labels", "ExposedPorts", "Volumes", "Healthcheck")


class BadImageJSON(PybuildError):
    """An index, manifest or config that is not what the OCI image spec describes."""

    reference = "bad-image-json"


def _bad(what: str, problem: str) -> BadImageJSON:
    return BadImageJSON(f"{what} {problem}", hint="the image is damaged or was not written by an OCI-conformant tool")


def _show(value: Any) -> str:
    text = json.dumps(value)[:60] if not isinstance(value, str) else repr(value[:60])
    return text


def load(body: bytes, what: str) -> dict:
    """``body`` as a JSON object (at most MAX_DOCUMENT bytes)."""
    if len(body) > MAX_DOCUMENT:
        raise _bad(what, f"is larger than {MAX_DOCUMENT} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _bad(what, f"is not JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise _bad(what, f"is not a JSON object but {type(doc).__name__}")
    return doc


def descriptor(value: Any, what: str) -> dict:
    """An OCI descriptor with a sha256 digest, a non-negative integer size and string media type and urls."""
    if not isinstance(value, dict):
        raise _bad(what, f"is not a descriptor object: {_show(value)}")
    digest, size = value.get("digest"), value.get("size")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise _bad(what, f"has no valid sha256 digest: {_show(digest)}")
    if type(size) is not int or size < 0:
        raise _bad(what, f"has no valid size: {_show(size)}")
    if not isinstance(value.get("mediaType", ""), str):
        raise _bad(what, f"has a mediaType that is not a string: {_show(value['mediaType'])}")
    urls = value.get("urls")
    if urls is not None and (not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)):
        raise _bad(what, "has urls that are not a list of strings")
    annotations = value.get("annotations")
    if annotations is not None and not _string_map(annotations):
        raise _bad(what, "has annotations that are not an object of strings")
    return value


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def index_entries(doc: dict, what: str) -> list[dict]:
    """An index's `manifests`: descriptors whose `platform`, when present, is an object of strings."""
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise _bad(what, f"has no `manifests` list: {_show(entries)}")
    for i, entry in enumerate(entries):
        descriptor(entry, f"{what}: manifests[{i}]")
        platform = entry.get("platform")
        if platform is not None and not (isinstance(platform, dict) and all(
                isinstance(platform.get(k, ""), str) for k in ("os", "architecture", "variant"))):
            raise _bad(what, f"manifests[{i}] has a platform that is not an object of strings: {_show(platform)}")
    return entries


def manifest_parts(doc: dict, what: str) -> tuple[dict, list[dict]]:
    """(config descriptor, layer descriptors) of an image manifest."""
    config = descriptor(doc.get("config"), f"{what}: config")
    layers = doc.get("layers", [])
    if not isinstance(layers, list):
        raise _bad(what, f"has `layers` that are not a list: {_show(layers)}")
    return config, [descriptor(layer, f"{what}: layers[{i}]") for i, layer in enumerate(layers)]


def image_config(doc: dict, what: str) -> dict:
    """An image config whose fields pybuild reads have their spec's types; returns ``doc``."""
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise _bad(what, f"has no `rootfs` object: {_show(rootfs)}")
    diff_ids = rootfs.get("diff_ids") or []  # null: no layers (some tools write it so for scratch images)
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and DIGEST.fullmatch(d) for d in diff_ids):
        raise _bad(what, "has `rootfs.diff_ids` that are not a list of sha256 digests")
    for key in ("created", "architecture", "os", "variant", "author"):
        if not isinstance(doc.get(key) or "", str):
            raise _bad(what, f"has a `{key}` that is not a string: {_show(doc[key])}")
    history = doc.get("history") or []
    if not isinstance(history, list) or not all(_history_entry(h) for h in history):
        raise _bad(what, "has a `history` that is not a list of history objects")
    _container_config(doc.get("config"), what)
    return doc


def _history_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and all(isinstance(entry.get(k) or "", str)
                                           for k in ("created", "created_by", "comment", "author")) \
        and isinstance(entry.get("empty_layer", False), bool)


def _container_config(cfg: Any, what: str) -> None:
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise _bad(what, f"has a `config` that is not an object: {_show(cfg)}")
    for key in _STRINGS:
        if not isinstance(cfg.get(key) or "", str):
            raise _bad(what, f"has `config.{key}` that is not a string: {_show(cfg[key])}")
    for key in _STRING_LISTS:
        value = cfg.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise _bad(what, f"has `config.{key}` that is not a list of strings: {_show(value)}")
    for key in _OBJECTS:
        if not isinstance(cfg.get(key) or {}, dict):
            raise _bad(what, f"has `config.{key}` that is not an object: {_show(cfg[key])}")
    if not _string_map(cfg.get("Labels") or {}):
        raise _bad(what, "has `config.Labels` whose values are not all strings")
    test = (cfg.get("Healthcheck") or {}).get("Test")
    if test is not None and (not isinstance(test, list) or not all(isinstance(v, str) for v in test)):
        raise _bad(what, f"has `config.Healthcheck.Test` that is not a list of strings: {_show(test)}")
