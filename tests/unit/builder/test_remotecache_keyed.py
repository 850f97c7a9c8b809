"""Shared cache repositories (`type=registry,ref=HOST/REPO`, no tag) and `cache-mounts=`: specs, entry manifests
and the mounts section of a cache document (builder/remotecache/keyed.py, format.py)."""
from __future__ import annotations

import json

import pytest

from builder.errors import UsageError
from builder.remotecache.format import decode_mounts, encode
from builder.remotecache.keyed import RECORD, entry_manifest, key_tag, mount_tag, record_value
from builder.remotecache.spec import parse_cache_spec
from tests.unit.builder.test_remotecache import _entries, _layer


def test_a_registry_ref_without_a_tag_is_a_keyed_repository():
    assert parse_cache_spec("type=registry,ref=127.0.0.1:5000/cache", export=True).keyed
    assert parse_cache_spec("type=registry,ref=127.0.0.1:5000/team/cache", export=False).keyed
    assert not parse_cache_spec("type=registry,ref=127.0.0.1:5000/cache:ci", export=True).keyed
    assert not parse_cache_spec("type=registry,ref=127.0.0.1:5000/cache@sha256:" + "0" * 64, export=False).keyed
    assert not parse_cache_spec("127.0.0.1:5000/me/app", export=False).keyed  # `--cache-from IMAGE`: :latest


def test_cache_mounts_take_ids_or_all():
    spec = parse_cache_spec("type=registry,ref=r/c:t,cache-mounts=/root/.cache/pip,deps,mode=max", export=True)
    assert spec.cache_mounts == ("/root/.cache/pip", "deps") and spec.mode == "max"
    assert parse_cache_spec('type=local,dest=/x,"cache-mounts=a,b"', export=True).cache_mounts == ("a", "b")
    assert parse_cache_spec("type=registry,ref=r/c,cache-mounts=all", export=True).cache_mounts == ("all",)
    for bad in ("type=registry,ref=r/c,cache-mounts=", "type=registry,ref=r/c,cache-mounts=all,deps"):
        with pytest.raises(UsageError, match="cache-mounts= wants"):
            parse_cache_spec(bad, export=True)
    with pytest.raises(UsageError, match="does not take cache-mounts"):
        parse_cache_spec("type=registry,ref=r/c,cache-mounts=all", export=False)


def test_an_entry_is_tagged_by_its_key_and_carries_its_record():
    key, parent, layer, created, description = _entries()[1]
    assert key_tag(key) == key[7:] and len(mount_tag("deps")) == 70
    doc = json.loads(entry_manifest(layer, RECORD, record_value(key, parent, layer, created,
                                                                {**description, "files": ["x"] * 5})))
    record = json.loads(doc["annotations"][RECORD])
    assert record["key"] == key and record["layer"] == 0 and "files" not in record["description"]
    assert doc["layers"][0]["digest"] == layer.blob.digest and doc["config"]["size"] == 2


def test_mounts_round_trip_and_bad_entries_are_dropped():
    doc, layers = encode(_entries(), "max", mounts=[("deps", _layer(7))])
    assert doc["mounts"] == [{"id": "deps", "layer": 1}] and layers[1] == _layer(7)
    descs = [{"mediaType": l.blob.media_type, "digest": l.blob.digest, "size": l.blob.size,
              "annotations": {"containerd.io/uncompressed": l.diff_id}} for l in layers]
    warnings: list[str] = []
    assert decode_mounts(doc, descs, "x", warnings.append) == {"deps": _layer(7)}
    doc["mounts"] += [{"id": "bad", "layer": 9}, {"id": 3, "layer": 0}, "junk"]
    assert decode_mounts(doc, descs, "x", warnings.append) == {"deps": _layer(7)} and len(warnings) == 3
    assert "mounts" not in encode(_entries(), "max")[0]  # a cache without mounts is byte-identical to before


def test_a_deeply_nested_document_from_a_hostile_cache_is_a_format_error():
    """json.loads raises RecursionError (no ValueError) on ~100k nested arrays: a 200 kB manifest or record of a
    hostile cache registry stopped the build with a traceback instead of being ignored with a warning."""
    from builder.remotecache.format import FormatError, parse_json

    with pytest.raises(FormatError, match="is not JSON"):
        parse_json(b"[" * 100_000 + b"]" * 100_000, "manifest 0123")
