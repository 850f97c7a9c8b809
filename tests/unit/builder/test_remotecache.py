"""The remote cache's pure parts: --cache-to/--cache-from specs and the record format (builder/remotecache)."""
from __future__ import annotations

import hashlib
import json

import pytest

from builder.errors import UsageError
from builder.plan.keys import make_key
from builder.remotecache.format import (
    CACHE_CONFIG_TYPE,
    FormatError,
    artifact,
    decode,
    encode,
    record_problem,
)
from builder.remotecache.spec import parse_cache_spec
from cache import Descriptor, Layer


def test_specs_parse_as_buildx():
    spec = parse_cache_spec("type=registry,ref=127.0.0.1:5000/cache/app:ci,mode=max,ignore-error=true", export=True)
    assert (spec.type, spec.ref, spec.mode, spec.ignore_error) == ("registry", "127.0.0.1:5000/cache/app:ci", "max",
                                                                  True)
    assert parse_cache_spec("127.0.0.1:5000/me/app:1", export=False).ref == "127.0.0.1:5000/me/app:1"
    assert parse_cache_spec("type=local,src=/tmp/c", export=False).path == "/tmp/c"
    assert parse_cache_spec("type=inline", export=True).type == "inline"
    assert parse_cache_spec("type=registry,ref=r/a:b", export=True).mode == "min"


@pytest.mark.parametrize("spec, export, says", [
    ("type=registry", True, "needs ref="),
    ("type=registry,ref=r/a,mode=all", True, "mode='all'"),
    ("type=local", False, "needs src=DIR"),
    ("type=local,src=/x", True, "does not take src"),
    ("type=inline", False, "type 'inline' is unsupported here"),
    ("type=gha", True, "type 'gha' is unsupported"),
    ("type=registry,ref=r/a,color=red", True, "does not take color"),
    ("type=registry,ref=r/a,compression=lz4", True, "compression='lz4'"),
    ("type=registry,ref=Bad/Name", False, "invalid image reference"),
])
def test_bad_specs_are_one_usage_error(spec, export, says):
    with pytest.raises(UsageError) as err:
        parse_cache_spec(spec, export=export)
    assert says in err.value.message


def _layer(n: int) -> Layer:
    blob = "sha256:" + hashlib.sha256(b"blob%d" % n).hexdigest()
    diff_id = "sha256:" + hashlib.sha256(b"tar%d" % n).hexdigest()
    return Layer(diff_id, Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", blob, 100 + n))


def _entries():
    first = make_key({"op": "exec", "parent": None, "argv": ["true"], "env": [], "cwd": "/", "user": "",
                      "network": "none"})
    second = make_key({"op": "file", "parent": first.digest, "actions": [], "sources": [], "from": None})
    return [(second.digest, first.digest, None, 2.0, {"instruction": "COPY", "inputs": second.parts}),
            (first.digest, None, _layer(1), 1.0, {"instruction": "RUN true", "inputs": first.parts})]


def _decoded(doc, layers, warnings):
    config, manifest = artifact(doc, layers)
    parsed = json.loads(manifest)
    assert parsed["config"]["mediaType"] == CACHE_CONFIG_TYPE
    return decode(json.loads(config), parsed["layers"], "type=local,src=x", warnings.append)


def test_records_round_trip_and_are_sorted():
    warnings: list[str] = []
    doc, layers = encode(_entries(), "max")
    assert [r["key"] for r in doc["records"]] == sorted(r["key"] for r in doc["records"])
    found = _decoded(doc, layers, warnings)
    assert not warnings
    first = _entries()[1]
    assert found[first[0]].layer == _layer(1) and found[first[0]].created == 1.0
    assert found[_entries()[0][0]].parent == first[0] and found[_entries()[0][0]].layer is None
    assert artifact(*encode(list(reversed(_entries())), "max")) == artifact(doc, layers)  # deterministic


def test_a_record_whose_inputs_do_not_hash_to_its_key_is_dropped():
    doc, layers = encode(_entries(), "max")
    forged = doc["records"][0]
    forged["description"]["inputs"] = {**forged["description"]["inputs"], "argv": ["rm", "-rf", "/"]}
    warnings: list[str] = []
    found = _decoded(doc, layers, warnings)
    assert forged["key"] not in found and len(found) == 1
    assert warnings == [f"cache type=local,src=x: record {forged['key'][:19]} ignored: its key does not match its "
                        "inputs"]


@pytest.mark.parametrize("change, problem", [
    ({"parent": "sha256:" + "0" * 64}, "its parent does not match its inputs"),
    ({"layer": 7}, "its layer is not in the manifest"),
    ({"created": "yesterday"}, "it has no creation time"),
    ({"key": "md5:1"}, "it has no key or no inputs"),
])
def test_record_problems(change, problem):
    doc, _ = encode(_entries(), "max")
    record = next(r for r in doc["records"] if r["layer"] is not None)
    assert record_problem(record, 1) is None
    assert record_problem({**record, **change}, 1) == problem


def test_a_document_that_is_not_a_cache_is_refused():
    with pytest.raises(FormatError):
        decode({"v": 99, "records": []}, [], "x", print)
