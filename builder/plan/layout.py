"""Read an OCI image layout the operator named (`--build-context NAME=oci-layout:///path[:tag|@sha256:...]`).

Nothing in a layout is trusted: every blob is opened below `blobs/sha256/` of the layout (no symlink out of it,
only regular files, sizes bounded), and the index's manifest, the manifest's config and, when copied, every layer
are checked against the digest and size of the descriptor that names them, as containerd's content store does.
Malformed JSON or a descriptor of the wrong shape is one clear error naming the file, never a traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from typing import Any, BinaryIO

from builder.errors import ImageNotFoundError, PybuildError
from builder.plan.bases import REF_NAME

MAX_JSON = 4 << 20  # index, manifest and config: 4 MiB, containerd's manifest limit
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class LayoutError(PybuildError):
    reference = "bad-oci-layout"


def split_ref(body: str) -> tuple[str, str | None, str | None]:
    """`/path[:tag|@sha256:hex]` → (path, tag, digest); a `:` in a directory name is part of the path."""
    path, tag, digest = body, None, None
    if "@" in os.path.basename(path):
        path, _, digest = path.rpartition("@")
        if not _DIGEST.fullmatch(digest):
            raise LayoutError(f"oci-layout://{body}: {digest!r} is not a sha256:<64 hex digits> digest")
    elif ":" in os.path.basename(path):
        path, _, tag = path.rpartition(":")
    return path, tag, digest


def _blob_path(layout: str, digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise LayoutError(f"OCI layout {layout}: descriptor digest {digest!r} is not sha256:<64 hex digits>")
    blobs = os.path.join(layout, "blobs", "sha256")
    real = os.path.realpath(blobs)
    if os.path.commonpath([real, os.path.realpath(layout)]) != os.path.realpath(layout):
        raise LayoutError(f"OCI layout {layout}: blobs/sha256 leads out of the layout (a symlink)")
    return os.path.join(real, digest.split(":", 1)[1])


def open_regular(path: str, what: str) -> tuple[BinaryIO, int]:
    """Open a regular file without following a final symlink and without blocking on a fifo; (file, size)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageNotFoundError(f"{what}: {path} does not exist") from None
    except OSError as exc:
        raise LayoutError(f"{what}: cannot open {path}: {exc.strerror} (a symlink or special file?)") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise LayoutError(f"{what}: {path} is not a regular file")
    return os.fdopen(fd, "rb"), st.st_size


def open_blob(layout: str, digest: str, size: int | None, what: str) -> _Verified:
    """A layout blob checked against its descriptor's size now and its digest as it is read (raises at EOF)."""
    fh, actual = open_regular(_blob_path(layout, digest), what)
    if size is not None and actual != size:
        fh.close()
        raise LayoutError(f"{what} {digest}: the blob has {actual} bytes, its descriptor says {size}")
    return _Verified(fh, digest, actual, what)


class _Verified:
    """A read-only stream of at most `size` bytes that raises LayoutError at EOF when they do not hash to
    `digest` (a file that grows after it was opened is read only to its size then)."""

    def __init__(self, fh: BinaryIO, digest: str, size: int, what: str) -> None:
        self._fh, self._digest, self._left, self._what = fh, digest, size, what
        self._hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        whole = n is None or n < 0
        data = self._fh.read(self._left if whole else min(n, self._left))
        self._left -= len(data)
        self._hash.update(data)
        if not data or whole or not self._left:
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self._digest:
                raise LayoutError(f"{self._what} {self._digest} does not match its content ({actual}): "
                                  "the layout was changed after it was written")
        return data

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "_Verified":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{what} is not a JSON object")
    return doc


def read_json_blob(layout: str, desc: Any, what: str) -> dict[str, Any]:
    """The JSON blob a descriptor names, verified and bounded."""
    desc = descriptor(desc, what)
    if desc["size"] > MAX_JSON:
        raise LayoutError(f"{what} {desc['digest']}: {desc['size']} bytes is more than the {MAX_JSON} allowed")
    with open_blob(layout, desc["digest"], desc["size"], what) as fh:
        return _json(fh.read(), f"{what} {desc['digest']}")


def descriptor(desc: Any, what: str) -> dict[str, Any]:
    """A descriptor with a sha256 digest and a non-negative int size, or a LayoutError."""
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) or \
            not isinstance(desc.get("size"), int) or isinstance(desc.get("size"), bool) or desc["size"] < 0:
        raise LayoutError(f"{what}: a descriptor needs a digest and a size: {str(desc)[:200]}")
    if not _DIGEST.fullmatch(desc["digest"]):
        raise LayoutError(f"{what}: digest {desc['digest'][:80]!r} is not sha256:<64 hex digits>")
    return desc


def read_index(layout: str) -> dict[str, Any]:
    """index.json of the layout (a regular file, at most MAX_JSON bytes)."""
    fh, size = open_regular(os.path.join(layout, "index.json"), f"OCI layout {layout}")
    with fh:
        if size > MAX_JSON:
            raise LayoutError(f"OCI layout {layout}: index.json is larger than {MAX_JSON} bytes")
        doc = _json(fh.read(MAX_JSON + 1), f"OCI layout {layout}: index.json")
    if not isinstance(doc.get("manifests"), list):
        raise LayoutError(f"OCI layout {layout}: index.json has no manifests list")
    return doc


def choose_manifest(layout: str, tag: str | None, digest: str | None, arch: str) -> dict[str, Any]:
    """The image manifest's descriptor for `tag` (or `digest`, or the only/first image), through nested indexes."""
    manifests = [descriptor(m, f"OCI layout {layout}: index.json") for m in read_index(layout)["manifests"]]
    if digest is not None:
        chosen = [m for m in manifests if m["digest"] == digest]
    elif tag is not None:
        chosen = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) == tag]
    else:
        chosen = manifests
    if not chosen:
        wanted = f"tagged {tag!r}" if tag is not None else f"with digest {digest}" if digest else "at all"
        raise ImageNotFoundError(f"OCI layout {layout} has no image {wanted}")
    desc = chosen[0]
    for _ in range(4):  # an index of indexes: pick this machine's platform
        if desc.get("mediaType") not in INDEX_TYPES:
            return desc
        nested = read_json_blob(layout, desc, f"OCI layout {layout}: index")
        entries = [descriptor(m, f"OCI layout {layout}: index") for m in nested.get("manifests") or []]
        fitting = [m for m in entries if (m.get("platform") or {}).get("architecture") in (arch, None)]
        if not fitting:
            raise ImageNotFoundError(f"OCI layout {layout}: no image for linux/{arch} in {desc['digest']}")
        desc = fitting[0]
    raise LayoutError(f"OCI layout {layout}: indexes nested too deep")
