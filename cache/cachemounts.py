"""RUN --mount=type=cache directories: store state beside the layers, never in a layer or a cache key.

Layout, under the store root:

    cachemounts/<name>          the directory a RUN mounts (name: the first 24 hex digits of the sha256 of its id,
                                and of its seed when it starts as a copy of a stage's directory)
    cachemounts/<name>.id       the mount's id as the Dockerfile gave it, for listings
    cachemounts/<name>.lock     sharing=locked/private: the users' exclusive lock
    cachemounts/<name>.inuse    every user holds a shared flock on it while the RUN runs; prune takes it exclusively
                                (without waiting) before removing the directory, so a mount in use is never removed
    cachemounts/.new-*          a directory being made (renamed into place), .private-* a throw-away private copy

Lock files are never removed: a process blocked on a removed file's lock would hold a lock nobody else sees.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

DIR = "cachemounts"


@dataclass(frozen=True)
class CacheMount:
    name: str
    id: str
    path: Path
    size: int  # bytes on disk (allocated blocks)
    created: float
    last_used: float


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for entry in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, entry)).st_blocks * 512
            except OSError:
                pass
    return total


def listing(root: Path) -> list[CacheMount]:
    """Every cache mount directory of the store at `root`, by name."""
    base = root / DIR
    if base.is_symlink() or not base.is_dir():  # a planted link would make prune remove what it points at
        return []
    mounts = []
    for entry in sorted(base.iterdir()):
        if entry.is_symlink() or not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            mount_id = (base / f"{entry.name}.id").read_text()
        except OSError:
            mount_id = entry.name
        st = entry.stat()
        mounts.append(CacheMount(entry.name, mount_id, entry, _tree_size(entry), st.st_ctime, st.st_mtime))
    return mounts


def _lock_file(path: Path) -> TextIO:
    """Open (creating) a lock file without following a symlink planted in its place."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return open(fd, "a")


def hold(root: Path, name: str) -> TextIO:
    """A user's shared hold on cache mount `name` (a file object: closing it lets go); taken before the directory
    is looked at or made, so a concurrent prune either removed it already or waits for nobody and skips it."""
    base = root / DIR
    base.mkdir(exist_ok=True)
    handle = _lock_file(base / f"{name}.inuse")
    try:
        fcntl.flock(handle, fcntl.LOCK_SH)
    except BaseException:
        handle.close()
        raise
    return handle


def name_for(mount_id: str) -> str:
    """The directory name of the cache mount ``mount_id`` (one without from=: builder/ops/mounts.py)."""

    return hashlib.sha256(mount_id.encode()).hexdigest()[:24]


def restore(root: Path, name: str, mount_id: str, fill: Callable[[Path], None]) -> bool:
    """Make cache mount `name` from outside content: ``fill`` writes it into a fresh private directory, renamed
    into place only while nobody holds the mount (its `.inuse` taken exclusively, without waiting) and only if it
    does not exist yet, so a mount a build uses or wrote is never replaced under it. False: not restored."""
    base = root / DIR
    base.mkdir(exist_ok=True)
    with _lock_file(base / f"{name}.inuse") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a RUN uses it now: it exists, and is that build's
        if os.path.lexists(base / name):
            return False

        tmp = Path(tempfile.mkdtemp(dir=base, prefix=".new-"))
        try:
            fill(tmp)
            os.rename(tmp, base / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fd = os.open(base / f"{name}.id", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as out:
            out.write(mount_id)
    return True


def prune(root: Path) -> tuple[int, int]:
    """Remove every cache mount no RUN holds now, with leftovers of killed builds; (count, bytes freed)."""
    base = root / DIR
    count = freed = 0
    for mount in listing(root):
        with _lock_file(base / f"{mount.name}.inuse") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a RUN uses it now
            shutil.rmtree(mount.path, ignore_errors=True)
            (base / f"{mount.name}.id").unlink(missing_ok=True)
            count, freed = count + 1, freed + mount.size
    if base.is_dir() and not base.is_symlink():
        for entry in base.iterdir():  # .new-* and .private-* of builds that were killed
            if entry.is_dir() and entry.name.startswith((".new-", ".private-")):
                _remove_if_stale(entry)
    return count, freed


def _remove_if_stale(path: Path) -> None:
    """A `.new-`/`.private-` directory is in use only for the few seconds of its RUN; one older than a day is a
    killed build's."""
    import time  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    try:
        if time.time() - path.stat().st_mtime > 86400:
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass
