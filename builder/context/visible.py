"""What a COPY source names in the context once the .dockerignore has removed what it excludes.

BuildKit never sends an excluded file, directory or symlink to the builder, so for COPY they do not exist,
whatever points at them: `COPY link /x` with `link -> secret` and `secret` ignored fails as "not found" there.
pybuild reads the context in place, so a source path is resolved here with the same rule: symlinks followed
inside the context (`scoped_join`'s walk: builder/sandbox/securejoin.py), a symlink that is itself excluded is
absent, and so is a path that resolves to an excluded entry (or into an excluded directory that no `!exception`
re-includes).
"""
from __future__ import annotations

import os
import stat

from builder.context.dockerignore import Excluded
from builder.sandbox.securejoin import resolve_in_root


def visible_rel(root: str, rel: str, excluded: Excluded | None) -> str | None:
    """The context-relative path ``rel`` resolves to ('' for the root), or None when it does not exist or the
    .dockerignore (``excluded``) removes it or a symlink on its way."""
    # an excluded symlink is not in the context: nothing behind it is reachable through it
    keep = None if excluded is None else (lambda link: not excluded(link))
    parts = resolve_in_root(root, rel, keep_missing=False, through=keep)
    if parts is None:
        return None
    final = "/".join(parts)
    if final and excluded is not None and excluded(final):
        return None
    return final


def copy_visible(root: str, rel: str, excluded: Excluded, dest: str, *, link: bool) -> None:
    """Make ``dest`` a copy of context path ``rel`` (resolved, from `visible_rel`) without what the .dockerignore
    excludes, for a RUN bind mount: regular files are hard-linked when ``link`` (a read-only mount) and the
    context is on the same file system, else copied; devices and sockets are left out, as BuildKit does."""
    from builder.context.dockerignore import visit  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    src = os.path.join(root, rel) if rel else root
    st = os.lstat(src)
    if not stat.S_ISDIR(st.st_mode):
        _copy_entry(src, st, dest, link)
        return
    os.mkdir(dest)
    _copy_dir(src, rel, excluded, dest, link, visit)
    _finish_dir(src, st, dest)


def _copy_dir(src: str, rel: str, excluded: Excluded, dest: str, link: bool, visit) -> bool:
    """Copy the entries of directory ``src`` the .dockerignore keeps; True if any was copied."""
    copied = False
    for name in sorted(os.listdir(src)):
        child, child_rel, child_dest = os.path.join(src, name), f"{rel}/{name}" if rel else name, \
            os.path.join(dest, name)
        st = os.lstat(child)
        is_dir = stat.S_ISDIR(st.st_mode)
        include, descend = visit(excluded, child_rel, is_dir)
        if not include and not descend:
            continue
        if is_dir:
            os.mkdir(child_dest)
            kept = _copy_dir(child, child_rel, excluded, child_dest, link, visit)
            if not include and not kept:  # entered only for exceptions that matched nothing
                os.rmdir(child_dest)
                continue
            _finish_dir(child, st, child_dest)
        elif include:
            _copy_entry(child, st, child_dest, link)
        copied = True
    return copied


def _copy_entry(src: str, st: os.stat_result, dest: str, link: bool) -> None:
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dest)
    elif stat.S_ISREG(st.st_mode):
        if link:
            try:
                os.link(src, dest, follow_symlinks=False)
                return
            except OSError:
                pass
        import shutil  # lazy: saves ~2 ms at start-up

        shutil.copy2(src, dest, follow_symlinks=False)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dest, stat.S_IMODE(st.st_mode))
    else:
        return
    os.lchown(dest, st.st_uid, st.st_gid)


def _finish_dir(src: str, st: os.stat_result, dest: str) -> None:
    os.chmod(dest, stat.S_IMODE(st.st_mode))
    os.lchown(dest, st.st_uid, st.st_gid)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
