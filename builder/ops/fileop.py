"""COPY/ADD/WORKDIR executed in a helper process with its own mount namespace.

Run as `python -m builder.ops.fileop` with a JSON spec on stdin (built by builder/ops/file.py). The helper
unshares a mount namespace, mounts the step's overlay root (and, for COPY --from, the source stage's root
read-only), performs the copies and exits: its mounts vanish with it, so a crash or SIGKILL leaks nothing.

Every path on the destination side is resolved with `scoped_join` inside the mounted root, so an image's
symlinks (`/lib -> /usr/lib`, or a hostile `/x -> /etc`) are followed inside the rootfs and never onto the host.
Sources are resolved the same way inside the context or the source stage. Failures are reported as one JSON line
on stdout ({"error": ...}) and exit status 2; the parent turns it into a PybuildError.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys

from builder.context.paths import clean, scoped_join
from builder.ops import untar
from builder.ops.copysel import Excluder, FileOpError, copy_parents, select_sources
from builder.plan.chmod import parse_chmod
from builder.sandbox import fuse, syscalls
from builder.sandbox.passwd import parse_group, parse_passwd


class Owner:
    """Owner of what a step writes; None keeps the source's. A plain class: this helper starts once per
    step and `dataclasses` would add ~12 ms to that (tests/unit/builder/test_helper_imports.py)."""

    __slots__ = ("uid", "gid")

    def __init__(self, uid: int | None, gid: int | None) -> None:
        self.uid = uid
        self.gid = gid


def _mount_root(target: str, lowerdirs: list[str], upper: str | None, work: str | None,
                fuse_mounts: list[tuple[str, int]] | None = None) -> str:
    """The stack on `target`; with `fuse_mounts` (the fuse-overlayfs snapshotter) mounted by a daemon, noted there."""
    if upper is None and len(lowerdirs) == 1:
        syscalls.mount(lowerdirs[0], target, None, syscalls.MS_BIND | syscalls.MS_REC)
        syscalls.mount(None, target, None, syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
        return target
    if fuse_mounts is not None:
        fuse_mounts.append((target, fuse.mount(target, lowerdirs, upper, work)))
        return target
    data = syscalls.overlay_options(lowerdirs, upper, work)
    if upper is not None and work is not None:
        syscalls.mount_overlay_volatile(target, 0, data, work)
    else:
        syscalls.mount("overlay", target, "overlay", 0, data)
    return target


def _lookup(root: str, dbfile: str, name: str, field: str) -> int | None:
    """``field`` (uid or gid) of the entry ``name`` in the root's /etc/passwd or /etc/group, resolved inside it."""
    parse = parse_passwd if dbfile == "/etc/passwd" else parse_group
    try:
        entries = parse(scoped_join(root, dbfile))
    except OSError:  # unreadable (a directory, a loop): no entries, as a missing file
        return None
    return next((getattr(e, field) for e in entries if e.name == name), None)


def resolve_owner(root: str, spec: str | None, strict: bool = True) -> Owner:
    """`--chown=user[:group]` against the destination root's /etc/passwd and /etc/group (as BuildKit).

    Not strict (WORKDIR's owner, the image's USER): a name the image does not know counts as 0, as BuildKit's
    readUser does for a mkdir."""
    if not spec:
        return Owner(0, 0)
    user, _, group = spec.partition(":")
    uid = int(user) if user.isdigit() else _lookup(root, "/etc/passwd", user, "uid")
    if uid is None and strict:
        raise FileOpError(f"unable to convert uid/gid chown string to host mapping: can't find uid for user {user}: "
                          "no such user in the image's /etc/passwd")
    if group:
        gid = int(group) if group.isdigit() else _lookup(root, "/etc/group", group, "gid")
        if gid is None and strict:
            raise FileOpError(f"can't find gid for group {group}: no such group in the image's /etc/group")
    elif user.isdigit():
        gid = uid
    else:
        gid = _lookup(root, "/etc/passwd", user, "gid")
    if not strict and gid is None and group and not group.isdigit():
        gid = _lookup(root, "/etc/passwd", user, "gid")
    return Owner(uid or 0, gid if gid is not None else (uid or 0))


class Copier:
    """Writes entries under `root` (the mounted step root), resolving parents inside it."""

    def __init__(self, root: str, owner: Owner, chmod: int | None, excluded=None) -> None:
        self.root = root
        self.owner = owner
        self.chmod = chmod
        self.excluded = excluded  # .dockerignore matcher for context sources: relpath -> bool
        self.links: dict[tuple[int, int], str] = {}
        if excluded is not None:  # imported only with a .dockerignore, as the matcher is (main)
            from builder.context.dockerignore import visit  # lazy: saves ~18 ms at start-up

            self._visit = visit

    def host(self, image_path: str, follow_last: bool = False) -> str:
        parent, _, base = clean(image_path).rpartition("/")
        directory = scoped_join(self.root, parent)
        if not base:
            return directory
        path = os.path.join(directory, base)
        return scoped_join(self.root, clean(image_path)) if follow_last else path

    def mkdirs(self, image_path: str) -> str:
        """mkdir -p inside the root; new directories get the owner and 0755 (the --chmod mode when given, as
        fsutil's Copy since 2025); returns the host path."""
        mode = self._mode(stat.S_IFDIR | 0o755)
        current = ""
        for part in [p for p in clean(image_path).split("/") if p]:
            current = f"{current}/{part}"
            host = self.host(current, follow_last=True)
            if os.path.isdir(host):
                continue
            if os.path.lexists(host):
                os.unlink(host)
            os.mkdir(host, 0o700)
            self._chown(host, 0, 0)
            os.chmod(host, mode)  # after the chown, which clears set-id bits
        return self.host(image_path, follow_last=True)

    def _chown(self, host: str, src_uid: int, src_gid: int) -> None:
        uid = src_uid if self.owner.uid is None else self.owner.uid
        gid = src_gid if self.owner.gid is None else self.owner.gid
        os.lchown(host, uid, gid)

    def _mode(self, st_mode: int) -> int:
        if callable(self.chmod):  # a symbolic --chmod applies to each file's own mode
            return self.chmod(st_mode)
        return self.chmod if self.chmod is not None else stat.S_IMODE(st_mode)

    def _replace(self, host: str) -> None:
        if os.path.lexists(host) and not (os.path.isdir(host) and not os.path.islink(host)):
            os.unlink(host)
        elif os.path.isdir(host) and not os.path.islink(host):
            shutil.rmtree(host)

    def write_file(self, image_dest: str, content: str) -> None:
        """COPY <<EOF: a heredoc body becomes a file (mode 0644 unless --chmod)."""
        self.mkdirs(os.path.dirname(clean(image_dest)))
        host = self.host(image_dest, follow_last=True)  # through a symlink, as fs.RootPath
        self._replace(host)
        with open(host, "w", encoding="utf-8") as fh:
            fh.write(content)
        self._chown(host, 0, 0)
        os.chmod(host, self._mode(stat.S_IFREG | 0o644))

    def copy_tree(self, src: str, image_dest: str, rel: str | None = None, top: bool = True) -> None:
        """Copy src (file, symlink or directory) to image_dest; directories merge into an existing one.

        As BuildKit (fsutil copy): a directory source's own destination, when new, is made like a created parent
        (0755 or the --chmod mode, the owner) and only its times come from the source; directories below it, new
        or existing, get the source's owner, mode and xattrs (overwriteTargetMetadata)."""
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            host = self.host(image_dest, follow_last=True)
            if top and not os.path.isdir(host):
                host = self.mkdirs(image_dest)
            elif not top:  # below the top, an existing directory takes the source's owner, mode and xattrs too
                if not os.path.isdir(host):
                    host = self.host(image_dest)
                    if os.path.lexists(host):
                        os.unlink(host)
                    os.mkdir(host, 0o700)
                self._attributes(src, st, host)
            with os.scandir(src) as it:
                names = sorted(e.name for e in it)
            for name in names:
                child_rel = f"{rel}/{name}" if rel else name
                if rel is not None and self.excluded is not None:
                    child = os.path.join(src, name)
                    include, descend = self._visit(self.excluded, child_rel, os.path.isdir(child)
                                                   and not os.path.islink(child))
                    if not include:
                        if descend:  # an exception re-includes something below: keep the parents
                            self.copy_tree(child, f"{clean(image_dest)}/{name}", child_rel, False)
                        continue
                self.copy_tree(os.path.join(src, name), f"{clean(image_dest)}/{name}",
                               child_rel if rel is not None else None, False)
            os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))
            return
        self.mkdirs(os.path.dirname(clean(image_dest)))
        host = self.host(image_dest, follow_last=top)  # the top destination through a symlink
        self.copy_leaf(src, st, host)

    def copy_leaf(self, src: str, st: os.stat_result, host: str) -> None:
        """One non-directory; a file hard-linked to one this copy already wrote becomes a link to it."""
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            self._replace(host)
            os.link(self.links[key], host)
            return
        self._replace(host)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), host)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, host, follow_symlinks=False)
        elif stat.S_ISSOCK(st.st_mode):  # fsutil's copyDevice: a socket becomes an empty stub file
            os.mknod(host, stat.S_IFREG | 0o600)
        else:  # fifos and device nodes, as fsutil's copyDevice
            os.mknod(host, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        self._attributes(src, st, host)
        if st.st_nlink > 1:
            self.links[key] = host

    def _attributes(self, src: str, st: os.stat_result, host: str) -> None:
        """fsutil's copyFileInfo then copyXAttrs: owner, then mode (the chown clears set-id bits), xattrs
        (a file capability, security.capability, is dropped by the chown too), times."""
        self._chown(host, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(host, self._mode(st.st_mode))
        copy_xattrs(src, host)
        os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def extract(self, archive: str, image_dest: str, keep_owners: bool = False) -> None:
        """ADD of a local tar archive: unpacked below image_dest, never leaving it (builder/ops/untar.py); entries
        keep the archive's owners with ``keep_owners`` (no --chown), else get the step's."""
        host = self.mkdirs(clean(image_dest))
        owner = None if keep_owners else (self.owner.uid or 0, self.owner.gid or 0)
        try:
            untar.untar(archive, host, owner, self.chmod)
        except untar.UntarError as e:
            raise FileOpError(str(e)) from None


def copy_xattrs(src: str, dest: str) -> None:
    """Every xattr of src onto dest (not following symlinks); one that cannot be read or set is skipped, as
    BuildKit's copy does (it logs and goes on)."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(dest, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            continue


def is_archive(path: str) -> bool:
    """A tar, plain or gzip/bzip2/xz-compressed, by its magic number and, when compressed, its first header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return untar.is_tar(path)  # a compressed file that is not a tar (notes.txt.gz) is copied as it is
    # FIXME(zstd): BuildKit unpacks zstd tars too; tarfile cannot read them before Python 3.14, so they are copied
    return len(head) >= 262 and head[257:262] == b"ustar"


def run_copy(op: dict, dest_root: str, src_root: str, excluded=None) -> None:
    owner = resolve_owner(dest_root, op.get("chown"))
    if op.get("kind") == "stage" and not op.get("chown"):
        owner = Owner(None, None)  # COPY --from keeps the source's ownership unless --chown
    chmod = parse_chmod(op["chmod"]) if op.get("chmod") else None
    exclude = None
    if op.get("excludes"):
        from builder.context.dockerignore import PatternMatcher  # lazy: saves ~17 ms at start-up

        exclude = PatternMatcher(op["excludes"])
    copier = Copier(dest_root, owner, chmod, excluded if exclude is None else Excluder(excluded, exclude, "").matches)
    dest: str = op["dest"]
    if op["op"] == "write":
        copier.write_file(dest, op["content"] or "")
        return
    if op["op"] == "fetch":  # ADD <url>: the builder's download, as a file (unpacked only with --unpack=true)
        into_dir = dest.endswith("/") or os.path.isdir(copier.host(dest, follow_last=True))
        if op.get("extract") and is_archive(op["file"]):
            copier.extract(op["file"], dest)
            return
        copier.copy_tree(op["file"], f"{dest.rstrip('/')}/{op['name']}" if into_dir else dest)
        return
    matches = select_sources(op, src_root, excluded)
    dest_is_dir = dest.endswith("/") or op.get("force_dir", False) or len(matches) > 1 or op.get("parents")
    if len(matches) > 1 and not dest.endswith("/"):
        raise FileOpError("when using COPY with more than one source file, the destination must be a directory "
                          "and end with a /")
    for rel, kept, real in matches:
        copier.links = {}  # hard links are kept within one source, not across sources (one fsutil Copy each)
        src = scoped_join(src_root, real)
        st = os.stat(src)
        if op.get("extract") and stat.S_ISREG(st.st_mode) and is_archive(src):
            copier.extract(src, dest, keep_owners=not op.get("chown"))
            continue
        tracked = real if copier.excluded is not None else None  # its entries are matched where they are
        if exclude is not None:
            copier.excluded = Excluder(excluded, exclude, real).matches
        if op.get("parents"):
            copier.copy_tree(src, copy_parents(copier, src_root, rel, kept, dest), tracked)
            continue
        if stat.S_ISDIR(st.st_mode):
            copier.copy_tree(src, dest, tracked)
            continue
        into_dir = dest_is_dir or os.path.isdir(copier.host(dest, follow_last=True))
        target = f"{dest.rstrip('/')}/{os.path.basename(rel)}" if into_dir else dest
        copier.copy_tree(src, target, tracked)


def main() -> int:
    spec = json.load(sys.stdin)
    fuse_mounts: list[tuple[str, int]] | None = [] if spec.get("snapshotter") == "fuse-overlayfs" else None
    try:
        return _run(spec, fuse_mounts)
    finally:
        for target, pid in reversed(fuse_mounts or []):  # the daemons end with their mounts
            fuse.unmount(target, pid)


def _run(spec: dict, fuse_mounts: list[tuple[str, int]] | None) -> int:
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.make_mounts_private()
        if spec.get("root_dir"):  # a plain directory written in place (a cache mount being seeded)
            root = spec["mountpoints"][0]
            syscalls.mount(spec["root_dir"], root, None, syscalls.MS_BIND)
        else:
            root = _mount_root(spec["mountpoints"][0], spec["lowerdirs"], spec["upper"], spec["work"], fuse_mounts)
        src_root = spec.get("context") or ""
        if spec.get("source_lowerdirs"):
            src_root = _mount_root(spec["mountpoints"][1], spec["source_lowerdirs"], None, None, fuse_mounts)
        excluded = None
        if spec.get("ignore"):  # only a context with a .dockerignore needs the matcher (and its imports)
            from builder.context.dockerignore import PatternMatcher  # lazy: saves ~17 ms at start-up

            excluded = PatternMatcher(spec["ignore"]).matches
        for op in spec["ops"]:
            if op["op"] == "mkdir":
                Copier(root, resolve_owner(root, op.get("chown"), strict=False), None).mkdirs(op["path"])
            else:
                run_copy(op, root, src_root, excluded)
    except (FileOpError, OSError) as exc:
        message = str(exc) if isinstance(exc, FileOpError) else os_message(exc)
        json.dump({"error": message}, sys.stdout)
        return 2
    return 0


def os_message(exc: OSError) -> str:
    """An OSError as the user reads it: its reason, then the file when it names one."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


if __name__ == "__main__":
    sys.exit(main())
