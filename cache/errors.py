"""Errors raised by the content-addressed store.

Every error carries the store path it is about (``path``) so that `builder.cli` can render
"doing what: cause (where)" without parsing messages. The hierarchy is flat on purpose:

    StoreError            any failure of the store (bad layout, unsafe tar, missing snapshot, ...)
    ├── BlobNotFound      a digest the store does not hold
    ├── CorruptBlob       bytes on disk do not hash to their name
    ├── LockTimeout       a key lock could not be taken in time
    └── Interrupted       the caller asked a long operation (a layer commit) to stop
"""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """A store operation failed; ``path`` locates the file or directory involved, if any."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else Path(path)

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        return f"{self.message} ({self.path})"


class BlobNotFound(StoreError):
    """The store holds no blob with this digest."""

    def __init__(self, digest: str, *, path: str | Path | None = None) -> None:
        super().__init__(f"blob not found: {digest}", path=path)
        self.digest = digest


class CorruptBlob(StoreError):
    """A blob's content does not match its digest (or its recorded size)."""

    def __init__(self, digest: str, actual: str, *, path: str | Path | None = None) -> None:
        super().__init__(f"corrupt blob {digest}: content hashes to {actual}; it was removed from the store: "
                         "build again to make it anew (a base image's layer: pull it again with --pull), or run "
                         "`pybuild cache prune` to drop what refers to it", path=path)
        self.digest = digest
        self.actual = actual


class LockTimeout(StoreError):
    """Another holder kept a lock longer than the caller was willing to wait."""

    def __init__(self, key: str, timeout: float, *, path: str | Path | None = None) -> None:
        super().__init__(f"timed out after {timeout:g}s waiting for lock on {key!r}", path=path)
        self.key = key
        self.timeout = timeout


class Interrupted(StoreError):
    """A long operation stopped because its caller's ``cancelled()`` returned True; nothing was kept."""
