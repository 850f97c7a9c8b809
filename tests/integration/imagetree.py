"""An image's files as the fidelity suite compares them: read from a `docker save` archive (manifest.json), as
both pybuild's `--output type=docker` and docker itself write one.

Each layer tar is read as is (whiteouts kept as names), then the layers are applied in order to give the final
tree. A file is rendered as one line: `path type mode uid:gid` then, by type, its content (short text quoted, else
a sha256 prefix), its link target, the other paths hard-linked to it (in the same layer), and its xattrs.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from dataclasses import dataclass, field

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
XATTR = "SCHILY.xattr."
TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
         tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block"}


@dataclass
class Entry:
    path: str
    type: str
    mode: int
    uid: int
    gid: int
    content: str = ""
    target: str = ""
    xattrs: dict[str, bytes] = field(default_factory=dict)
    links: tuple[str, ...] = ()

    def render(self) -> str:
        parts = [self.path, self.type, f"{self.mode:04o}", f"{self.uid}:{self.gid}"]
        if self.content:
            parts.append(self.content)
        if self.target:
            parts.append("-> " + self.target)
        if self.links:
            parts.append("links=" + ",".join(self.links))
        parts.extend(f"xattr:{k}={v.hex()}" for k, v in sorted(self.xattrs.items()))
        return " ".join(parts)


@dataclass
class Image:
    config: dict
    layers: list[list[str]]  # per layer: the paths its tar holds (whiteouts as written), sorted
    files: dict[str, Entry]

    def lines(self) -> dict[str, str]:
        return {p: e.render() for p, e in self.files.items()}


def _content(data: bytes) -> str:
    if len(data) <= 80:
        try:
            return json.dumps(data.decode())
        except UnicodeDecodeError:
            pass
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _abs(name: str) -> str:
    return posixpath.normpath("/" + name.lstrip("/"))


def _read_layer(tar: tarfile.TarFile) -> tuple[list[str], dict[str, Entry]]:
    names, entries, links = [], {}, {}
    for m in tar:
        path = _abs(m.name)
        names.append(path)
        xattrs = {k[len(XATTR):]: v.encode("utf-8", "surrogateescape") for k, v in m.pax_headers.items()
                  if k.startswith(XATTR)}
        if m.islnk():
            first = _abs(m.linkname)
            links.setdefault(first, [first]).append(path)
            base = entries[first]
            entries[path] = Entry(path, base.type, base.mode, base.uid, base.gid, base.content, xattrs=base.xattrs)
            continue
        data = tar.extractfile(m).read() if m.isreg() else b""
        entries[path] = Entry(path, TYPES.get(m.type, "other"), m.mode & 0o7777, m.uid, m.gid,
                              _content(data) if m.isreg() else "", m.linkname if m.issym() else "", xattrs)
    for group in links.values():
        for path in group:
            entries[path].links = tuple(sorted(p for p in group if p != path))
    return sorted(names), entries


def _apply(files: dict[str, Entry], layer: dict[str, Entry], names: list[str]) -> None:
    for path in names:
        parent, base = posixpath.split(path)
        if base == OPAQUE:
            for p in [p for p in files if p.startswith(parent.rstrip("/") + "/")]:
                del files[p]
        elif base.startswith(WHITEOUT):
            gone = posixpath.join(parent, base[len(WHITEOUT):])
            for p in [p for p in files if p == gone or p.startswith(gone + "/")]:
                del files[p]
    for entry in files.values():  # a path this layer writes is no longer the same inode as the lower ones
        if entry.links and any(p in layer for p in entry.links):
            entry.links = tuple(p for p in entry.links if p not in layer)
    for path, entry in layer.items():
        if not posixpath.basename(path).startswith(WHITEOUT):
            if entry.type != "dir":
                for p in [p for p in files if p.startswith(path + "/")]:
                    del files[p]
            files[path] = entry


def read_archive(path) -> Image:
    """The image in a docker-archive tar (the first manifest entry)."""
    with tarfile.open(path) as outer:
        def member(name: str) -> bytes:
            return outer.extractfile(name).read()

        (entry, *_) = json.loads(member("manifest.json"))
        config = json.loads(member(entry["Config"]))
        layers, files = [], {}
        for name in entry["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(name), mode="r:*") as tar:
                names, layer = _read_layer(tar)
            layers.append(names)
            _apply(files, layer, names)
    return Image(config, layers, files)
