"""A hostile registry serving layers whose digests are right but whose tars escape, or whose content is not what
the config's diff_ids say: `pull_image(unpack=True)` (FROM's pull) refuses them and keeps nothing."""
from __future__ import annotations

import io
import tarfile

import pytest

from builder.export.pull import pull_image
from builder.export.registry import Registries, RegistryError
from cache import StoreError
from tests.unit.builder.test_pull import Served, digest, served, store  # noqa: F401 (fixtures)
from tests.unit.builder.test_pull_unpack import assert_nothing_kept, publish_tars


def tar_of(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, target, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target or ""
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


ESCAPES = {
    "dotdot": tar_of(("../../../../tmp/pybuild-pwned-dotdot", tarfile.REGTYPE, None, b"x")),
    "absolute": tar_of(("/tmp/pybuild-pwned-abs", tarfile.REGTYPE, None, b"x")),
    "hardlink-out": tar_of(("h", tarfile.LNKTYPE, "/etc/passwd", None)),
    "hardlink-dotdot": tar_of(("h", tarfile.LNKTYPE, "../../../../etc/passwd", None)),
    "symlink-dir-then-file": tar_of(("d", tarfile.SYMTYPE, "/tmp", None),
                                    ("d/pybuild-pwned-sym", tarfile.REGTYPE, None, b"x")),
    "symlink-then-hardlink": tar_of(("d", tarfile.SYMTYPE, "/etc", None), ("h", tarfile.LNKTYPE, "d/passwd", None)),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_an_escaping_layer_with_the_right_digest_writes_nothing_outside(served, store, name, tmp_path):
    _, blobs = publish_tars("v1", [ESCAPES[name]])
    before = open("/etc/passwd", "rb").read()
    try:
        pull_image(store, f"{served}/me/app:v1", Registries(), unpack=True)
    except (StoreError, RegistryError):
        assert_nothing_kept(store, digest(blobs[0]))
    else:  # accepted: then what it made stays inside its snapshot
        for snap in store._index.snapshots():
            for p in (store.root / "snapshots" / str(snap.id) / "fs").rglob("*"):
                assert not p.is_symlink() or p.name == "d"
                if p.name == "h":
                    assert p.stat().st_ino != __import__("os").stat("/etc/passwd").st_ino
    assert open("/etc/passwd", "rb").read() == before
    assert not any(__import__("glob").glob("/tmp/pybuild-pwned-*"))


def test_a_layer_that_is_not_its_diff_id_is_refused(served, store):
    import gzip
    import json

    from builder.export.pull import host_platform

    tar = tar_of(("a", tarfile.REGTYPE, None, b"a"))
    blob = gzip.compress(tar, mtime=0)
    config = json.dumps({"architecture": host_platform()[1], "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest(tar_of(("b", tarfile.REGTYPE, None,
                                                                                   b"b")))]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": digest(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": digest(blob), "size": len(blob)}]}).encode()
    Served.blobs.update({digest(blob): blob, digest(config): config})
    Served.manifests["v1"] = (manifest, "application/vnd.oci.image.manifest.v1+json")
    with pytest.raises(RegistryError, match="diff_id"):
        pull_image(store, f"{served}/me/app:v1", Registries(), unpack=True)
    assert store.resolve(f"{served}/me/app:v1") is None


class Trickling(Served):
    """Announces the layer's real length, then sends a byte every 50 ms, forever (until the client goes)."""

    def do_GET(self):
        import time

        body = self.layer_requested()
        if body is None:
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) * 1000))
        self.end_headers()
        try:
            for i in range(len(body) * 1000):
                self.wfile.write(body[i % len(body):i % len(body) + 1])
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            return


@pytest.mark.slow  # seconds: kept out of the fast set's minute
def test_a_never_ending_layer_meets_the_deadline(store):
    from builder.export.transfer import TransferLimits
    from tests.httpserve import serving

    Served.manifests, Served.blobs, Served.requests = {}, {}, []
    _, blobs = publish_tars("v1", [tar_of(("a", tarfile.REGTYPE, None, bytes(range(256)) * 64))])
    with serving(Trickling) as host:
        with pytest.raises(RegistryError):
            pull_image(store, f"{host}/me/app:v1", Registries(limits=TransferLimits(deadline=1.5, min_rate=0)),
                       unpack=True)
    assert_nothing_kept(store, digest(blobs[0]))
