"""Tree building and tar reading shared by the store tests (plain functions, no mocks)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

from cache import Store
from cache.compress import decompressed

EPOCH = 1_700_000_000


def build_tree(root: Path, spec: list[tuple]) -> None:
    """Create entries from (kind, path, arg...) tuples, then fix every mtime to EPOCH + 100.

    kinds: file(path, content[, mode]), dir(path[, mode]), symlink(path, target),
    hardlink(path, existing), whiteout(path), opaque(dir), xattr(path, name, value), fifo(path),
    owner(path, uid, gid).
    """
    for kind, rel, *args in spec:
        p = root / rel
        if kind == "file":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(args[0])
            os.chmod(p, args[1] if len(args) > 1 else 0o644)
        elif kind == "dir":
            p.mkdir(parents=True, exist_ok=True)
            os.chmod(p, args[0] if args else 0o755)
        elif kind == "symlink":
            os.symlink(args[0], p)
        elif kind == "hardlink":
            os.link(root / args[0], p)
        elif kind == "whiteout":
            os.mknod(p, stat.S_IFCHR, os.makedev(0, 0))
        elif kind == "opaque":
            os.setxattr(p, "trusted.overlay.opaque", b"y")
        elif kind == "xattr":
            os.setxattr(p, args[0], args[1], follow_symlinks=False)
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "owner":  # keeps set-id bits, which chown clears
            mode = os.lstat(p).st_mode
            os.chown(p, args[0], args[1], follow_symlinks=False)
            if not stat.S_ISLNK(mode):
                os.chmod(p, stat.S_IMODE(mode))
        else:
            raise ValueError(kind)
    set_mtimes(root, EPOCH + 100)


def set_mtimes(root: Path, t: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (t, t), follow_symlinks=False)


def commit_tree(store: Store, spec: list[tuple], parent=None, **kw):
    m = store.prepare(parent)
    build_tree(m.upper, spec)
    return store.commit(m, **kw)


def tar_bytes(store: Store, digest: str) -> bytes:
    with store.open_blob(digest) as raw:
        return decompressed(raw).read()


def tar_entries(data: bytes) -> list[tuple]:
    """(name as in the header, type, mode, uid, gid, size, linkname, mtime, xattrs) per entry."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf:
            raw_name = data[m.offset_data - 512:m.offset_data - 412].split(b"\0", 1)[0].decode()
            name = m.name + "/" if m.isdir() else m.name
            if m.pax_headers.get("path") is None:
                assert raw_name == name, (raw_name, name)
            xattrs = {k[13:]: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            out.append((name, m.type.decode(), oct(m.mode), m.uid, m.gid, m.size, m.linkname,
                        m.mtime, xattrs, m.uname, m.gname))
    return out


def snapshot_tree(root: Path) -> dict[str, tuple]:
    """Everything a layer preserves about a tree, for round-trip comparisons."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            content = b""
            if stat.S_ISREG(st.st_mode):
                content = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p).encode()
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                xattrs = {n: os.getxattr(p, n) for n in sorted(os.listxattr(p))}
            rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0
            whiteout = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
            mtime = None if whiteout else st.st_mtime_ns  # a whiteout's time is not in the tar
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        content, xattrs, rdev, mtime, st.st_nlink if stat.S_ISREG(st.st_mode) else 0)
    return out


def snapshot_dirs(root: Path) -> list[int]:
    """Ids of the snapshot directories on disk (``snapshots/empty`` is not a snapshot)."""
    return sorted(int(n) for n in os.listdir(root / "snapshots") if n != "empty")
