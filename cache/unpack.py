"""Unpacking a layer tar into a fresh snapshot directory, safely.

Every entry is reached from a directory file descriptor of the layer root, one component at a time with
O_NOFOLLOW (as umoci's and containerd's unpackers resolve inside the root): a symlink an earlier entry made is
never followed, not even to set metadata. Owners, modes, times and xattrs are set through a descriptor of the
entry itself (an O_PATH one for symlinks and devices), so the metadata of a directory, set last, cannot land on
whatever a later entry put at its name. Refused with StoreError: absolute names, ``..`` components, a parent
that is a symlink or not a directory, hard links to outside, to directories or through symlinks, malformed
whiteouts (``.wh.`` alone, ``.wh..``, ``.wh...``, a ``.wh..wh..opq`` that is not a leaf) and unknown types.

OCI whiteouts are turned into overlay ones so the directory works as an overlay lowerdir:
``.wh.<name>`` → character device 0/0 ``<name>``; ``.wh..wh..opq`` → the xattr
``trusted.overlay.opaque=y`` on its directory (both need CAP_MKNOD / CAP_SYS_ADMIN; rootless, in a user
namespace: ``user.overlay.opaque``, see layertar.overlay_prefix). Overlay
xattrs carried by the tar itself are dropped: only whiteout entries may create them. Other
``.wh..wh.*`` names are aufs bookkeeping and skipped, as containerd does.

`UnpackLimits` bounds what one layer may unpack to (tar bytes, and their ratio to the blob's size), so a
decompression bomb fails with an error naming the limit instead of filling the disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cache.errors import StoreError
from cache.layertar import (
    PAX_XATTR_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    opaque_xattr,
)
from cache.model import ByteReader, Digest
from cache.userns import OVERLAY_XATTR_PREFIX, overlay_prefix

CHUNK = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class UnpackLimits:
    """Bounds on one layer: at most ``max_entries`` entries and ``max_bytes`` of uncompressed tar, and, past
    ``ratio_floor`` bytes, at most ``max_ratio`` times the blob's size (0: no ratio bound). deflate cannot exceed ~1032:1, so the default
    ratio only stops zstd bombs and never a gzip layer; raise the bounds through `Store.open(unpack_limits=)`."""

    max_bytes: int = 64 << 30
    max_ratio: int = 10_000
    ratio_floor: int = 1 << 30
    max_entries: int = 10_000_000  # empty files cost no bytes but an inode each: a filesystem runs out first

    def bound(self, compressed: int | None) -> tuple[int, str]:
        """The byte bound for a blob of ``compressed`` bytes, and which limit it is."""
        if self.max_ratio and compressed is not None and \
                max(self.ratio_floor, self.max_ratio * compressed) < self.max_bytes:
            return max(self.ratio_floor, self.max_ratio * compressed), \
                f"the decompression ratio limit ({self.max_ratio}:1 past {self.ratio_floor} bytes)"
        return self.max_bytes, f"the size limit ({self.max_bytes} bytes)"


@dataclass(frozen=True, slots=True)
class UnpackStats:
    """The digest of the uncompressed tar bytes read (the diff_id) and regular-file bytes."""

    diff_id: Digest
    size: int


class _HashingReader:
    """Feeds every byte read through sha256 (tarfile stream mode reads sequentially), within a byte bound."""

    def __init__(self, f: ByteReader, bound: tuple[int, str] = (-1, "")) -> None:
        self.f = f
        self.hasher = hashlib.sha256()
        self.total = 0
        self.bound, self.limit = bound

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.total += len(data)
        if 0 <= self.bound < self.total:
            raise StoreError(f"the layer unpacks to more than {self.bound} bytes, over {self.limit}: "
                             "refused as a decompression bomb; if the image is genuine, raise the limit")
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


def check_whiteout(parts: list[str], name: str) -> None:
    """Refuse whiteouts that name no sibling: ``.wh.`` alone, ``.wh..``, ``.wh...``, ``.wh..wh..opq/x``."""
    hidden = parts[-1][len(WHITEOUT_PREFIX):]
    if hidden in ("", ".", "..") or any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1]):
        raise StoreError(f"layer entry {name!r} is not a valid whiteout (it must hide one sibling entry)")


class Unpacker:
    """Applies tar members below the directory ``dest`` one by one; directory metadata is fixed up at the end."""

    def __init__(self, dest: Path) -> None:
        self.root = os.open(dest, DIR_FLAGS)
        self.dirs: list[tuple[list[str], tarfile.TarInfo]] = []
        self.size = 0
        self._parent: tuple[tuple[str, ...], int] | None = None  # the last parent reached (entries are grouped)
        # ``dest`` starts empty, so only a name this layer made can exist: one never made needs no lstat (a wrong
        # guess fails safely, as O_EXCL/mkdir/symlink/mknod refuse an existing name). A name made and then removed
        # (by rmtree) stays in the set and costs an lstat.
        self.made: set[tuple[str, ...]] = set()
        # New inodes already belong to (euid, egid) when no directory hands its group down: chown is then skipped
        # for entries owned so (the layer's directories are made without set-gid; their modes come at the end).
        st = os.fstat(self.root)
        self.owner = (os.geteuid(), os.getegid()) if not st.st_mode & stat.S_ISGID and st.st_gid == os.getegid() \
            and not os.listdir(self.root) else None

    def close(self) -> None:
        self._forget_parent()
        os.close(self.root)

    def _forget_parent(self) -> None:
        if self._parent is not None and self._parent[1] != self.root:
            os.close(self._parent[1])
        self._parent = None

    def walk(self, dirs: list[str], name: str, create: bool) -> int:
        """A new descriptor of the directory ``dirs`` below the root, never through a symlink (missing ones are
        made, mode 0755, if ``create``); the caller closes it."""
        fd = os.dup(self.root)
        try:
            for depth, part in enumerate(dirs, 1):
                try:
                    child = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise StoreError(f"layer entry {name!r}: {'/'.join(dirs)} does not exist") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self.made.add(tuple(dirs[:depth]))
                    child = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    how = "would be written through a symlink" if stat.S_ISLNK(os.lstat(part, dir_fd=fd).st_mode) \
                        else "is below a non-directory"
                    raise StoreError(f"layer entry {name!r} {how} ({'/'.join(dirs[:depth])})") \
                        from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def parent_of(self, parts: list[str], name: str) -> int:
        """The (cached) descriptor of an entry's parent directory; owned by the Unpacker."""
        key = tuple(parts[:-1])
        if self._parent is None or self._parent[0] != key:
            fd = self.walk(parts[:-1], name, create=True) if key else self.root
            self._forget_parent()
            self._parent = (key, fd)
        return self._parent[1]

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        parts = split_name(member.name)
        if not parts:
            return  # the layer root itself: the snapshot root keeps its own attributes
        base = parts[-1]
        in_whiteout = any(p.startswith(WHITEOUT_PREFIX) for p in parts[:-1])
        if base.startswith(WHITEOUT_PREFIX) or in_whiteout:
            if base != WHITEOUT_OPAQUE or in_whiteout:
                check_whiteout(parts, member.name)
        try:
            parent = self.parent_of(parts, member.name)
            if base.startswith(WHITEOUT_PREFIX):
                self.whiteout(parent, base, parts)
                return
            key = tuple(parts)
            existing = _lstat(base, parent) if key in self.made else None
            if not (member.isdir() and existing is not None and stat.S_ISDIR(existing.st_mode)):
                self.remove(parent, base, existing)
                existing = None
            self.made.add(key)
            self.create(member, tar, parent, base, parts, existing is not None)
        except OSError as e:
            raise StoreError(f"unpack layer entry {member.name!r}: {e.strerror or e}") from e

    def remove(self, parent: int, base: str, st: os.stat_result | None) -> None:
        """Remove what is at ``base`` (an lstat of it given), never following symlinks."""
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):  # a child of the cached parent: that descriptor stays valid
            shutil.rmtree(base, dir_fd=parent)
        else:
            os.unlink(base, dir_fd=parent)

    def whiteout(self, parent: int, base: str, parts: list[str]) -> None:
        name = "/".join(parts)
        try:
            if base == WHITEOUT_OPAQUE:
                os.setxattr(parent, opaque_xattr(), b"y")
                return
            hidden = base[len(WHITEOUT_PREFIX):]
            if hidden.startswith(WHITEOUT_PREFIX):
                return  # aufs bookkeeping (.wh..wh.plnk, ...): meaningless here, as in Docker
            key = (*parts[:-1], hidden)
            self.remove(parent, hidden, _lstat(hidden, parent) if key in self.made else None)
            self.made.add(key)
            os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=parent)
        except OSError as e:
            raise StoreError(f"convert whiteout {name!r}: {e.strerror}") from e

    def create(self, m: tarfile.TarInfo, tar: tarfile.TarFile, parent: int, base: str, parts: list[str],
               is_dir: bool = False) -> None:
        """Make the entry ``base`` in ``parent``; ``is_dir``: a directory is there already (kept, as tar does)."""
        if m.isdir():
            if not is_dir:
                os.mkdir(base, 0o700, dir_fd=parent)
            self.dirs.append((parts, m))
            return
        if m.isreg():
            self.write_file(m, tar, parent, base)
            return
        if m.issym():
            os.symlink(m.linkname, base, dir_fd=parent)
        elif m.islnk():
            self.link(m, parent, base)
            return  # the inode already has its metadata
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
        else:
            raise StoreError(f"layer entry {m.name!r} has unsupported type {m.type!r}")
        fd = os.open(base, PATH_FLAGS, dir_fd=parent)
        try:
            set_metadata(f"/proc/self/fd/{fd}", m, self.owner)
        finally:
            os.close(fd)

    def write_file(self, m: tarfile.TarInfo, tar: tarfile.TarFile, parent: int, base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent)
        src = tar.extractfile(m)
        with os.fdopen(fd, "wb") as out:
            if src is not None:
                shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            set_metadata(fd, m, self.owner)
        self.size += m.size

    def link(self, m: tarfile.TarInfo, parent: int, base: str) -> None:
        """A hard link to a non-directory unpacked earlier in this layer, reached without following symlinks."""
        parts = split_name(m.linkname)
        if not parts:
            raise StoreError(f"hard link {m.name!r} points at the layer root")
        source_dir = self.walk(parts[:-1], m.name, create=False)
        try:
            st = _lstat(parts[-1], source_dir)
            if st is None or stat.S_ISDIR(st.st_mode):
                raise StoreError(f"hard link {m.name!r} → {m.linkname!r}: target is not a file "
                                 "unpacked earlier in this layer")
            os.link(parts[-1], base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source_dir)

    def finish(self) -> None:
        """Directory owners/modes/mtimes last, deepest first (children changed their mtimes); a directory a
        later entry replaced (by a symlink, say) is skipped, never followed."""
        self._forget_parent()
        done: set[tuple[str, ...]] = set()
        for parts, m in reversed(self.dirs):
            if tuple(parts) in done:
                continue  # an earlier entry of the same name: the last one wins, as for files
            done.add(tuple(parts))
            try:
                parent = self.walk(parts[:-1], m.name, create=False)
            except StoreError:
                continue  # an ancestor was replaced
            try:
                fd = os.open(parts[-1], DIR_FLAGS, dir_fd=parent)
            except OSError:
                continue  # replaced by something that is not a directory
            finally:
                os.close(parent)
            try:
                set_metadata(fd, m)
            except OSError as e:
                raise StoreError(f"set metadata of directory {m.name!r}: {e.strerror}") from e
            finally:
                os.close(fd)


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def set_xattrs(target: int | str, m: tarfile.TarInfo) -> None:
    for key, value in sorted(m.pax_headers.items()):
        if not key.startswith(PAX_XATTR_PREFIX):
            continue
        name = key[len(PAX_XATTR_PREFIX):]
        if name.startswith((OVERLAY_XATTR_PREFIX, overlay_prefix())):
            continue
        try:
            os.setxattr(target, name, value.encode("utf-8", "surrogateescape"))
        except OSError as e:
            if not (m.issym() and e.errno in (1, 95)):  # EPERM/EOPNOTSUPP on symlinks
                raise


def set_metadata(target: int | str, m: tarfile.TarInfo, owner: tuple[int, int] | None = None) -> None:
    """Owner, xattrs, mode (after chown, which clears set-id bits) and mtime of the entry itself: ``target`` is
    its open descriptor or the /proc/self/fd path of an O_PATH one (which names the inode, never a link's target).
    ``owner``: the (uid, gid) a new inode has already; chown is skipped for entries owned so."""
    if owner is None or (m.uid, m.gid) != owner:
        os.chown(target, m.uid, m.gid)
    set_xattrs(target, m)
    if not m.issym():
        os.chmod(target, m.mode & 0o7777)
    ns = int(m.mtime * 1_000_000_000)
    os.utime(target, ns=(ns, ns))


def unpack_layer(tar_stream: ByteReader, dest: Path, limits: UnpackLimits | None = None,
                 compressed: int | None = None) -> UnpackStats:
    """Unpack an uncompressed layer tar stream into the empty directory ``dest``, within ``limits`` (the
    defaults if None; ``compressed`` is the blob's size, for the ratio bound)."""
    limits = limits or UnpackLimits()
    reader = _HashingReader(tar_stream, limits.bound(compressed))
    unpacker = Unpacker(dest)
    try:
        with tarfile.open(fileobj=reader, mode="r|", encoding="utf-8",  # type: ignore[call-overload]
                          errors="surrogateescape") as tar:
            for count, member in enumerate(tar, 1):
                if count > limits.max_entries:
                    raise StoreError(f"the layer has more than {limits.max_entries} entries, over the entry limit: "
                                     "refused as an inode bomb; if the image is genuine, raise the limit")
                unpacker.apply(member, tar)
        unpacker.finish()
    except (tarfile.TarError, EOFError) as e:
        raise StoreError(f"read layer tar: {e}", path=dest) from e
    finally:
        unpacker.close()
    return UnpackStats(reader.drain(), unpacker.size)


class TeeReader(io.RawIOBase):
    """Reads a blob's bytes from ``source`` (a stream that checks them itself and raises at its end when they are
    not the blob's) and copies every byte into ``blob`` (a `cache.blobs.TempBlob`) on the way: a layer is unpacked
    while it is fetched, and kept, without being read back from disk. `drain` reads the rest of the source to its
    end, where the source's own check runs."""

    def __init__(self, source: ByteReader, blob: Any) -> None:
        super().__init__()
        self._source = source
        self._blob = blob
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        n = len(data)
        if n:
            buffer[:n] = data
            self._blob.write(data)
        else:
            self.done = True
        return n

    def drain(self) -> None:
        buffer = bytearray(CHUNK)
        while not self.done:
            self.readinto(buffer)
