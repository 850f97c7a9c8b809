"""Unpacking a layer tar into a fresh snapshot directory, safely.

The destination is a new private directory, so every path that exists in it was created by
this tar; checking each parent component with lstat() is therefore enough to refuse writes
through symlinks (no other writer can race us). Refused with StoreError: absolute names,
``..`` components, a parent that is a symlink or not a directory, hard links to outside or to
directories, and unknown entry types.

OCI whiteouts are turned into overlay ones so the directory works as an overlay lowerdir:
``.wh.<name>`` → character device 0/0 ``<name>``; ``.wh..wh..opq`` → the xattr
``trusted.overlay.opaque=y`` on its directory (both need CAP_MKNOD / CAP_SYS_ADMIN). Overlay
xattrs carried by the tar itself are dropped: only whiteout entries may create them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cache.errors import StoreError
from cache.layertar import (
    OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIX,
    PAX_XATTR_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
)
from cache.model import Digest

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class UnpackStats:
    """The digest of the uncompressed tar bytes read (the diff_id) and regular-file bytes."""

    diff_id: Digest
    size: int


class _HashingReader:
    """Feeds every byte read through sha256 (tarfile stream mode reads sequentially)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hasher = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hasher.update(data)
        return data

    def drain(self) -> Digest:
        while self.read(CHUNK):
            pass
        return Digest.from_hex(self.hasher.hexdigest())


def split_name(name: str) -> list[str]:
    """Normalised components of a tar name; refuses absolute names and ``..``."""
    if name.startswith("/"):
        raise StoreError(f"layer entry {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise StoreError(f"layer entry {name!r} escapes the layer root")
    return parts


class Unpacker:
    """Applies tar members to ``dest`` one by one; directory metadata is fixed up at the end."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.size = 0

    def parent_of(self, parts: list[str], name: str) -> str:
        """The checked parent directory of an entry, creating missing ones (mode 0755)."""
        current = os.fspath(self.dest)
        for part in parts[:-1]:
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise StoreError(f"layer entry {name!r} would be written through a symlink",
                                 path=current)
            if not stat.S_ISDIR(st.st_mode):
                raise StoreError(f"layer entry {name!r} is below a non-directory", path=current)
        return current

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parts = split_name(member.name)
        if not parts:
            return  # the layer root itself: the snapshot root keeps its own attributes
        parent = self.parent_of(parts, member.name)
        base = parts[-1]
        target = os.path.join(parent, base)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent, base, member.name)
            return
        if not (member.isdir() and os.path.isdir(target) and not os.path.islink(target)):
            remove(target)
        try:
            self.create(member, tar, target)
        except OSError as e:
            raise StoreError(f"unpack layer entry {member.name!r}: {e.strerror or e}",
                             path=target) from e

    def whiteout(self, parent: str, base: str, name: str) -> None:
        try:
            if base == WHITEOUT_OPAQUE:
                os.setxattr(parent, OPAQUE_XATTR, b"y", follow_symlinks=False)
                return
            hidden = base[len(WHITEOUT_PREFIX):]
            if hidden.startswith(WHITEOUT_PREFIX):
                return  # aufs bookkeeping (.wh..wh.plnk, ...): meaningless here, as in Docker
            target = os.path.join(parent, hidden)
            remove(target)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        except OSError as e:
            raise StoreError(f"convert whiteout {name!r}: {e.strerror}", path=parent) from e

    def create(self, m: tarfile.TarInfo, tar: tarfile.TarFile, target: str) -> None:
        if m.isdir():
            if not os.path.isdir(target):
                os.mkdir(target, 0o700)
            self.dirs.append((target, m))
            return
        if m.isreg():
            self.write_file(m, tar, target)
        elif m.issym():
            os.symlink(m.linkname, target)
        elif m.islnk():
            source = self.link_source(m)
            os.link(source, target, follow_symlinks=False)
            return  # the inode already has its metadata
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(target, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        else:
            raise StoreError(f"layer entry {m.name!r} has unsupported type {m.type!r}")
        self.set_metadata(target, m)

    def write_file(self, m: tarfile.TarInfo, tar: tarfile.TarFile, target: str) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        src = tar.extractfile(m)
        with os.fdopen(fd, "wb") as out:
            if src is not None:
                shutil.copyfileobj(src, out, CHUNK)
        self.size += m.size

    def link_source(self, m: tarfile.TarInfo) -> str:
        parts = split_name(m.linkname)
        if not parts:
            raise StoreError(f"hard link {m.name!r} points at the layer root")
        source = os.path.join(self.parent_of(parts, m.name), parts[-1])
        st = os.lstat(source) if os.path.lexists(source) else None
        if st is None or stat.S_ISDIR(st.st_mode):
            raise StoreError(f"hard link {m.name!r} → {m.linkname!r}: target is not a file "
                             "unpacked earlier in this layer")
        return source

    def set_xattrs(self, target: str, m: tarfile.TarInfo) -> None:
        for key, value in sorted(m.pax_headers.items()):
            if not key.startswith(PAX_XATTR_PREFIX):
                continue
            name = key[len(PAX_XATTR_PREFIX):]
            if name.startswith(OVERLAY_XATTR_PREFIX):
                continue
            try:
                os.setxattr(target, name, value.encode("utf-8", "surrogateescape"),
                            follow_symlinks=False)
            except OSError as e:
                if not (m.issym() and e.errno in (1, 95)):  # EPERM/EOPNOTSUPP on symlinks
                    raise

    def set_metadata(self, target: str, m: tarfile.TarInfo) -> None:
        """Owner, xattrs, mode (after chown, which clears set-id bits) and mtime."""
        os.chown(target, m.uid, m.gid, follow_symlinks=False)
        self.set_xattrs(target, m)
        if not m.issym():
            os.chmod(target, m.mode & 0o7777)
        ns = int(m.mtime * 1_000_000_000)
        os.utime(target, ns=(ns, ns), follow_symlinks=False)

    def finish(self) -> None:
        """Directory owners/modes/mtimes last, deepest first (children changed their mtimes)."""
        for target, m in reversed(self.dirs):
            try:
                self.set_metadata(target, m)
            except OSError as e:
                raise StoreError(f"set directory metadata: {e.strerror}", path=target) from e


def remove(path: str) -> None:
    """Remove whatever is at ``path`` (not following symlinks); absent is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def unpack_layer(tar_stream: BinaryIO, dest: Path) -> UnpackStats:
    """Unpack an uncompressed layer tar stream into the empty directory ``dest``."""
    reader = _HashingReader(tar_stream)
    unpacker = Unpacker(dest)
    try:
        with tarfile.open(fileobj=reader, mode="r|", encoding="utf-8",  # type: ignore[call-overload]
                          errors="surrogateescape") as tar:
            for member in tar:
                unpacker.apply(member, tar)
    except (tarfile.TarError, EOFError) as e:
        raise StoreError(f"read layer tar: {e}", path=dest) from e
    unpacker.finish()
    return UnpackStats(reader.drain(), unpacker.size)
