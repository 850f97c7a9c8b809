"""fcntl (flock) locks shared by all processes using a store.

Layout::

    <root>/store.lock                every open Store holds LOCK_SH on it; prune may sweep
                                     never-referenced blobs only while it gets LOCK_EX (alone)
    <root>/locks/<aa>/<sha256(key)>  one file per cache key; LOCK_EX while a builder works on it

flock locks belong to an open file description, so two threads of one process that each call
`key_lock` exclude each other too. Lock files may be unlinked by cleanup, so after locking we
check that the path still names the inode we locked, and retry if not.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cache.errors import LockTimeout, StoreError

POLL_MIN = 0.01
POLL_MAX = 0.25
LOCK_SUFFIX = ".lock"


def lock_path(directory: Path, key: str) -> Path:
    """The lock file for ``key`` (hashed: keys may be long or contain '/')."""
    h = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return directory / h[:2] / h


def acquire(path: Path, *, timeout: float, key: str, shared: bool = False) -> int:
    """Lock ``path`` (created if needed) and return the fd; raises LockTimeout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    delay = POLL_MIN
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StoreError(f"open lock file: {e.strerror}", path=path) from e
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            os.close(fd)
        else:
            if _still_named(fd, path):
                return fd
            os.close(fd)  # unlinked by cleanup between open and flock: lock the new file
            continue
        if time.monotonic() >= deadline:
            raise LockTimeout(key, timeout, path=path)
        time.sleep(delay)
        delay = min(delay * 2, POLL_MAX)


def release(fd: int) -> None:
    """Unlock and close (closing alone would unlock too; being explicit documents intent)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _still_named(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


@contextmanager
def key_lock(directory: Path, key: str, timeout: float) -> Iterator[None]:
    """Hold the exclusive lock of ``key`` for the duration of the block."""
    fd = acquire(lock_path(directory, key), timeout=timeout, key=key)
    try:
        yield
    finally:
        release(fd)


def try_lock(path: Path) -> int | None:
    """Take LOCK_EX on an existing file without waiting; None if held or absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def create_locked(directory: Path, prefix: str, suffix: str = "") -> tuple[Path, int]:
    """Create a new uniquely named file, LOCK_EX it and return (path, fd).

    A cleaner may lock and unlink the file between our open() and flock(); we then notice
    the path no longer names our inode and start again with a new name, so no grace period
    is needed before stale temp files may be removed.
    """
    while True:
        path = directory / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise StoreError(f"create temp file: {e.strerror}", path=path) from e
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _still_named(fd, path):
            return path, fd
        os.close(fd)


def clean_stale(directory: Path, prefix: str) -> int:
    """Remove ``prefix*`` temp entries whose writer is gone; returns how many were removed.

    A temp file is its own lock. A temp dir ``X`` is guarded by the file ``X.lock`` created
    (and locked) before the dir, so a dir without a lock file, or whose lock file we can lock,
    belongs to a dead process.
    """
    removed = 0
    for entry in list(os.scandir(directory)):
        name = entry.name
        if not name.startswith(prefix):
            continue
        path = Path(entry.path)
        is_dir = entry.is_dir(follow_symlinks=False)
        lockfile = path.with_name(name + LOCK_SUFFIX) if is_dir else path
        fd = try_lock(lockfile)
        if fd is None and lockfile.exists():
            continue  # held: its writer is alive
        try:
            if is_dir:
                shutil.rmtree(path, ignore_errors=True)
                lockfile.unlink(missing_ok=True)
            else:
                if name.endswith(LOCK_SUFFIX):
                    shutil.rmtree(path.with_name(name[: -len(LOCK_SUFFIX)]), ignore_errors=True)
                path.unlink(missing_ok=True)
            removed += 1
        finally:
            if fd is not None:
                release(fd)
    return removed


class StoreLock:
    """The shared "store is open" lock, with a try-exclusive upgrade for garbage collection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Waits only while a prune holds LOCK_EX for its short sweep.
        self.fd: int | None = acquire(path, timeout=600, key="store", shared=True)

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Yields True if no other process has the store open (then holds LOCK_EX), else False."""
        assert self.fd is not None, "store is closed"
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        try:
            yield alone
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_SH)  # downgrade (or re-take) the shared lock

    def close(self) -> None:
        if self.fd is not None:
            release(self.fd)
            self.fd = None

    def clean_key_locks(self, directory: Path) -> int:
        """Unlink key lock files nobody holds (their content is irrelevant); returns the count."""
        removed = 0
        for sub in directory.glob("??"):
            for path in sub.iterdir():
                fd = try_lock(path)
                if fd is not None:
                    path.unlink(missing_ok=True)
                    release(fd)
                    removed += 1
        return removed
