"""A tampered blob in the store is never exported: type=oci (a layout dir or tar), type=docker and a push stop with
CorruptBlob naming the blob and how to put it right, and the blob leaves the store so a rebuild can restore it."""
from __future__ import annotations

import io
import os
import tarfile
import urllib.parse

import pytest

from builder.export.docker_archive import write_archive
from builder.export.oci_layout import write_layout
from builder.export.push import push_image
from builder.export.registry import Registries
from cache import CorruptBlob
from tests.httpserve import Handler, serving
from tests.unit.builder.test_push import image  # noqa: F401 (a fixture: a stored image of four layers)


def tamper(store, digest: str) -> None:
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def check(err: pytest.ExceptionInfo, store, digest: str) -> None:
    message = str(err.value)
    assert digest in message and "removed from the store" in message and "build again" in message, message
    assert not store.has_blob(digest)


def test_an_oci_layout_export_refuses_a_tampered_layer(image, tmp_path):
    store, record = image
    bad = str(record.layers[2].blob.digest)
    tamper(store, bad)
    dest = tmp_path / "layout"
    with pytest.raises(CorruptBlob) as err:
        write_layout(store, dest, record.manifest.digest, record.manifest.size, record.config.digest,
                     [str(l.blob.digest) for l in record.layers], [("docker.io/me/app:1", "1")])
    check(err, store, bad)
    assert not (dest / "blobs/sha256" / bad.split(":")[1]).exists() and not (dest / "index.json").exists()


@pytest.mark.parametrize("docker_manifest", [True, False], ids=["docker", "oci-tar"])
def test_an_archive_export_refuses_a_tampered_config(image, tmp_path, docker_manifest):
    store, record = image
    tamper(store, str(record.config.digest))
    with pytest.raises(CorruptBlob) as err:
        write_archive(store, tmp_path / "out.tar", record, ["docker.io/me/app:1"], docker_manifest)
    check(err, store, str(record.config.digest))
    assert os.listdir(tmp_path) == ["store"]


class Lenient(Handler):
    """A registry that keeps whatever it is sent, unchecked: only pybuild's own check can stop a tampered blob."""

    got: dict[str, bytes] = {}

    def do_HEAD(self):
        self.reply(404, b"")

    def do_POST(self):
        self.reply(202, b"", {"Location": "/v2/me/app/blobs/uploads/1"})

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if "digest=" in self.path:
            Lenient.got[urllib.parse.unquote(self.path.split("digest=")[1])] = body
        self.reply(201, b"")


def test_a_push_refuses_a_tampered_layer(image):
    store, record = image
    bad = str(record.layers[1].blob.digest)
    tamper(store, bad)
    Lenient.got = {}
    with serving(Lenient) as host, pytest.raises(CorruptBlob) as err:
        push_image(store, record, f"{host}/me/app:1", Registries())
    check(err, store, bad)
    assert bad not in Lenient.got


class Pipe(io.RawIOBase):
    """What `dest=-` writes into when stdout is a pipe: not seekable, read by the consumer as it comes."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += bytes(b)
        return len(b)


def test_a_streamed_archive_stops_before_a_tampered_blob(image):
    """Second pass: into a pipe, the consumer must not get the tampered bytes before the error."""
    from builder.export.docker_archive import write_archive_to

    store, record = image
    bad = str(record.layers[2].blob.digest)
    tampered = store.blob_path(bad)
    tamper(store, bad)
    middle = tampered.read_bytes()[100_000:100_064]
    pipe = Pipe()
    with pytest.raises(CorruptBlob) as err:
        write_archive_to(pipe, store, record, ["docker.io/me/app:1"])
    check(err, store, bad)
    assert middle not in pipe.data and len(pipe.data) > 0
