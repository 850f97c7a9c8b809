"""ADD of a local tar archive: unpack it under the destination directory without ever leaving it.

As docker's chrootarchive (which BuildKit's ADD uses) the archive is unpacked as if the destination were `/`: every
entry's parent is opened with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) from a descriptor of the destination,
so a symlink an earlier entry made (`x -> /etc`, `y -> ../../..`) is resolved inside it and never onto the host or
elsewhere in the image. The last component is never followed: files are created with O_EXCL|O_NOFOLLOW, and owners,
modes and times are set through a descriptor of the entry itself. Hard links must name an entry inside; absolute
names and `..` are refused. Entries keep the archive's uid/gid (unless --chown) and mode (unless --chmod);
directories get the archive's mtimes after their contents are written. Device nodes and fifos are skipped, as
before. `max_bytes` bounds the content unpacked (a decompression bomb fails instead of filling the disk).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tarfile

SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64 (the unified syscall table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
MAX_BYTES = 64 << 30  # content bytes one ADD may unpack (as cache.unpack.UnpackLimits.max_bytes)
_libc = ctypes.CDLL(None, use_errno=True)
_openat2 = _libc["syscall"]  # its own function object: the signature below is openat2's through syscall(2)
_openat2.restype = ctypes.c_long
_openat2.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]


class UntarError(Exception):
    pass


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root: int, path: str, flags: int) -> int:
    """openat2(root, path) resolving `..` and every symlink as if ``root`` were `/`; raises OSError."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _openat2(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(root), os.fsencode(path or "."),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        if err == 38:  # ENOSYS
            raise UntarError("ADD of an archive needs openat2 (Linux 5.6 or later) to unpack it safely")
        raise OSError(err, os.strerror(err), path)
    return fd


def split(name: str, what: str) -> list[str]:
    """Components of a member or link name; refuses absolute names and `..`."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise UntarError(f"{what} {name!r} points outside the destination")
    return parts


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


class Untar:
    """Unpacks one archive below the directory ``dest`` (a host path already resolved inside the image)."""

    def __init__(self, dest: str, archive: str, owner: tuple[int, int] | None, chmod,
                 max_bytes: int = MAX_BYTES) -> None:
        self.root = os.open(dest, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.name = os.path.basename(archive)
        self.owner = owner
        self.chmod = chmod
        self.max_bytes = max_bytes
        self.written = 0
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []

    def close(self) -> None:
        os.close(self.root)

    def parent(self, parts: list[str]) -> int:
        """A descriptor of the entry's parent directory inside the root, made (0755, root-owned) if missing."""
        path = "/".join(parts[:-1])
        try:
            return open_in_root(self.root, path, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            if not parts[:-1]:
                raise
        above = self.parent(parts[:-1])
        try:
            os.mkdir(parts[-2], 0o755, dir_fd=above)
        except FileExistsError:  # a dangling symlink: refuse rather than guess where it leads
            raise UntarError(f"archive {self.name}: {path!r} exists and is not a directory") from None
        finally:
            os.close(above)
        return open_in_root(self.root, path, os.O_PATH | os.O_DIRECTORY)

    def apply(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = split(m.name, f"archive {self.name}: entry")
        if not parts or not (m.isdir() or m.isreg() or m.issym() or m.islnk()):
            return  # the destination itself keeps its attributes; devices and fifos are not unpacked
        parent = self.parent(parts)
        try:
            base, existing = parts[-1], _lstat(parts[-1], parent)
            if m.isdir() and existing is not None and stat.S_ISDIR(existing.st_mode):
                self.dirs.append(("/".join(parts), m))
                return
            if existing is not None:
                if stat.S_ISDIR(existing.st_mode):
                    shutil.rmtree(base, dir_fd=parent)
                else:
                    os.unlink(base, dir_fd=parent)
            self.create(tar, m, parent, base, parts)
        finally:
            os.close(parent)

    def create(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, base: str, parts: list[str]) -> None:
        if m.isdir():
            os.mkdir(base, 0o700, dir_fd=parent)
            self.dirs.append(("/".join(parts), m))
        elif m.isreg():
            self.written += m.size
            if self.written > self.max_bytes:
                raise UntarError(f"archive {self.name} unpacks to more than {self.max_bytes} bytes: refused as a "
                                 "decompression bomb")
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=parent)
            with os.fdopen(fd, "wb") as out:
                content = tar.extractfile(m)
                assert content is not None  # a regular file's member
                shutil.copyfileobj(content, out, 1 << 20)
                out.flush()
                self.set_metadata(fd, m)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=parent)
            fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                self.set_metadata(f"/proc/self/fd/{fd}", m)  # names the link itself, never its target
            finally:
                os.close(fd)
        else:
            self.link(m, parent, base)

    def link(self, m: tarfile.TarInfo, parent: int, base: str) -> None:
        source = split(m.linkname, f"archive {self.name}: hard link {m.name!r} to")
        if not source:
            raise UntarError(f"archive {self.name}: hard link {m.name!r} points at the destination itself")
        source_dir = self.parent(source)
        try:
            st = _lstat(source[-1], source_dir)
            if st is None or stat.S_ISDIR(st.st_mode):
                raise UntarError(f"archive {self.name}: hard link {m.name!r} to {m.linkname!r}: not a file "
                                 "unpacked earlier from the archive")
            os.link(source[-1], base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source_dir)

    def set_metadata(self, target: int | str, m: tarfile.TarInfo) -> None:
        """Owner, mode (after chown, which clears set-id bits), mtime of the entry ``target`` (an open descriptor
        or the /proc/self/fd path of an O_PATH one)."""
        os.chown(target, *(self.owner or (m.uid, m.gid)))
        if not m.issym():
            if callable(self.chmod):  # a symbolic --chmod applies to each entry's own mode
                os.chmod(target, self.chmod((stat.S_IFDIR if m.isdir() else stat.S_IFREG) | m.mode & 0o7777))
            else:
                os.chmod(target, self.chmod if self.chmod is not None else m.mode & 0o7777)
        os.utime(target, ns=(int(m.mtime * 1e9),) * 2)

    def finish(self) -> None:
        """Directories last, deepest first: their children changed their mtimes. A directory that a later entry
        replaced (by a symlink, say) is skipped, never followed."""
        for path, m in reversed(self.dirs):
            try:
                fd = open_in_root(self.root, path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                self.set_metadata(fd, m)
            finally:
                os.close(fd)


def untar(archive: str, dest: str, owner: tuple[int, int] | None, chmod: int | None,
          max_bytes: int | None = None) -> None:
    """Unpack the (possibly compressed) tar ``archive`` below the host directory ``dest`` (at most ``max_bytes``
    of content, default `MAX_BYTES`); raises UntarError."""
    job = Untar(dest, archive, owner, chmod, max_bytes or MAX_BYTES)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                try:
                    job.apply(tar, member)
                except OSError as e:
                    raise UntarError(f"archive {job.name}: entry {member.name!r}: {e.strerror or e}") from e
        job.finish()
    except (tarfile.TarError, EOFError) as e:
        raise UntarError(f"archive {job.name}: {e}") from e
    finally:
        job.close()


def is_tar(path: str) -> bool:
    """Whether ``path`` is a tar archive, plain or compressed (tarfile reads its first header): a compressed file
    that is not a tar, `notes.txt.gz`, is copied as it is, as BuildKit does."""
    try:
        with tarfile.open(path, "r:*") as tar:
            tar.next()
        return True
    except Exception:  # noqa: BLE001 (ReadError, EOFError, OSError, zlib.error, lzma.LZMAError: not a tar)
        return False
