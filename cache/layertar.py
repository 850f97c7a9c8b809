"""Canonical OCI layer tars generated from an overlay upper directory.

The tar is a pure function of the tree (paths, types, modes, owners, mtimes, xattrs, contents),
so equal trees give equal bytes, equal ``diff_id`` and equal compressed digests:

- entries in walk order with siblings sorted by their byte names (as Go's filepath.Walk, which
  Docker and BuildKit use), parents before children, the upper root itself omitted;
- names relative without leading "/" or "./"; directories end in "/" (tarfile adds it);
- PAX format (long names, big ids and xattrs as ``SCHILY.xattr.*`` records) with numeric
  uid/gid, empty uname/gname, whole-second mtimes clamped to ``SOURCE_DATE_EPOCH`` when given;
- a second path to an already written inode (same dev, ino) becomes a hard-link entry;
- overlay whiteouts (char device 0/0) become empty regular files ``.wh.<name>`` (mode 0,
  uid/gid 0, mtime = epoch or 0); a directory with ``trusted.overlay.opaque=y`` is written
  followed at once by ``<dir>/.wh..wh..opq`` (before its children, so an applier that keeps
  what this layer unpacked still works);
- real files named ``.wh.*`` are refused, sockets are skipped (as Docker does), overlay
  bookkeeping xattrs are dropped and metacopy/redirect entries are refused (their data or
  name lives in a lower layer, so no tar of the upper alone can be right).
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cache.errors import StoreError
from cache.userns import OVERLAY_XATTR_PREFIX, overlay_prefix

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = WHITEOUT_PREFIX + WHITEOUT_PREFIX + ".opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
PAX_XATTR_PREFIX = "SCHILY.xattr."
COPY_BUFFER = 1 << 20
# Host-specific or overlay-internal attributes that never belong in a layer.
IGNORED_XATTRS = frozenset({"security.selinux", "system.nfs4_acl"})
REFUSED_OVERLAY_XATTRS = frozenset({"trusted.overlay.metacopy", "trusted.overlay.redirect"})


def opaque_xattr() -> str:
    """The xattr that marks an opaque directory in an overlay upper (OPAQUE_XATTR as root)."""
    return overlay_prefix() + "opaque"


@dataclass(frozen=True, slots=True)
class LayerStats:
    """What went into a layer tar: entry count and apparent bytes of regular-file content."""

    entries: int
    size: int


@dataclass(frozen=True, slots=True)
class _Node:
    rel: str  # tar name of the node (whiteouts already renamed)
    path: str  # absolute path on disk
    st: os.stat_result
    whiteout: bool


def is_whiteout(st: os.stat_result) -> bool:
    """An overlay whiteout is a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def walk(root: Path) -> Iterator[_Node]:
    """Nodes below ``root`` in canonical order (depth-first, siblings by byte name)."""
    yield from _walk(os.fspath(root), "")


def _walk(directory: str, prefix: str) -> Iterator[_Node]:
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise StoreError(f"list layer directory: {e.strerror}", path=directory) from e
    nodes = []
    for name in names:
        path = os.path.join(directory, name)
        st = os.lstat(path)
        wh = is_whiteout(st)
        if name.startswith(WHITEOUT_PREFIX):
            raise StoreError(f"file name has the reserved whiteout prefix {WHITEOUT_PREFIX!r}",
                             path=path)
        tar_name = WHITEOUT_PREFIX + name if wh else name
        nodes.append((os.fsencode(tar_name), _Node(prefix + tar_name, path, st, wh)))
    nodes.sort(key=lambda pair: pair[0])
    for _, node in nodes:
        yield node
        if stat.S_ISDIR(node.st.st_mode):
            yield from _walk(node.path, node.rel + "/")


def read_xattrs(path: str) -> dict[str, bytes]:
    """All extended attributes of ``path`` (not following symlinks), sorted by name."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (95, 61):  # EOPNOTSUPP, ENODATA
            return {}
        raise StoreError(f"list xattrs: {e.strerror}", path=path) from e
    out = {}
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno == 61:  # ENODATA: removed meanwhile
                continue
            raise StoreError(f"read xattr {name}: {e.strerror}", path=path) from e
    return out


def _pax_xattrs(node: _Node, xattrs: dict[str, bytes]) -> dict[str, str]:
    pax = {}
    for name, value in xattrs.items():
        if name in REFUSED_OVERLAY_XATTRS or name in (overlay_prefix() + "metacopy", overlay_prefix() + "redirect"):
            raise StoreError(f"overlay {name.rsplit('.', 1)[1]} entry cannot be made into a "
                             "layer; mount overlay with metacopy=off,redirect_dir=off", path=node.path)
        if name in IGNORED_XATTRS or name.startswith((OVERLAY_XATTR_PREFIX, overlay_prefix())) or not value:
            continue  # empty values cannot be told apart from deletions in PAX
        pax[PAX_XATTR_PREFIX + name] = value.decode("utf-8", "surrogateescape")
    return pax


class LayerWriter:
    """Writes nodes of one tree as canonical tar entries into ``out``."""

    def __init__(self, out: BinaryIO | io.RawIOBase, epoch: int | None) -> None:
        self.tar = tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                                   encoding="utf-8", errors="surrogateescape",
                                   copybufsize=COPY_BUFFER)
        self.epoch = epoch
        self.inodes: dict[tuple[int, int], str] = {}
        self.entries = 0
        self.size = 0

    def mtime(self, seconds: float) -> int:
        t = int(seconds)
        return t if self.epoch is None else min(t, self.epoch)

    def add_marker(self, name: str) -> None:
        """An empty regular file with zeroed metadata (whiteouts and opaque markers)."""
        info = tarfile.TarInfo(name)
        info.mode = 0
        info.mtime = 0 if self.epoch is None else self.epoch
        info.uname = info.gname = ""
        self.tar.addfile(info)
        self.entries += 1

    def add(self, node: _Node) -> None:
        if node.whiteout:
            self.add_marker(node.rel)
            return
        st = node.st
        info = tarfile.TarInfo(node.rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = self.mtime(st.st_mtime)
        xattrs = read_xattrs(node.path)
        info.pax_headers = _pax_xattrs(node, xattrs)
        if not self._fill_type(node, info):
            return
        if info.type == tarfile.REGTYPE:
            self._add_regular(node, info)
        else:
            self.tar.addfile(info)
        self.entries += 1
        if info.type == tarfile.DIRTYPE and xattrs.get(opaque_xattr()) == b"y":
            self.add_marker(f"{node.rel}/{WHITEOUT_OPAQUE}")

    def _fill_type(self, node: _Node, info: tarfile.TarInfo) -> bool:
        """Set the entry type from the stat; False for what layers do not carry (sockets)."""
        mode = node.st.st_mode
        if stat.S_ISREG(mode):
            key = (node.st.st_dev, node.st.st_ino)
            first = self.inodes.get(key) if node.st.st_nlink > 1 else None
            if first is not None:
                info.type, info.linkname = tarfile.LNKTYPE, first
            else:
                info.type, info.size = tarfile.REGTYPE, node.st.st_size
                if node.st.st_nlink > 1:
                    self.inodes[key] = node.rel
        elif stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(node.path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(node.st.st_rdev), os.minor(node.st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return False
        return True

    def _add_regular(self, node: _Node, info: tarfile.TarInfo) -> None:
        try:
            fd = os.open(node.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise StoreError(f"open layer file: {e.strerror}", path=node.path) from e
        with os.fdopen(fd, "rb") as f:
            try:
                self.tar.addfile(info, f)
            except OSError as e:  # tarfile raises OSError("unexpected end of data") on shrink
                raise StoreError(f"add layer file: {e}", path=node.path) from e
        self.size += info.size

    def close(self) -> LayerStats:
        self.tar.close()
        return LayerStats(self.entries, self.size)


def write_layer(root: Path, out: BinaryIO | io.RawIOBase, *, epoch: int | None = None) -> LayerStats:
    """Write the canonical layer tar of the overlay upper dir ``root`` into ``out``."""
    writer = LayerWriter(out, epoch)
    for node in walk(root):
        writer.add(node)
    return writer.close()


def is_empty_dir(path: Path) -> bool:
    """True if ``path`` has no entries (an upper dir with no changes)."""
    with os.scandir(path) as it:
        return next(it, None) is None
