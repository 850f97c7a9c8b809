"""Content-addressed blob files.

Layout (under the store root)::

    blobs/sha256/<64 hex>        immutable blob, mode 0444, named by the sha256 of its bytes
    blobs/sha256/.tmp-<random>   a blob being written; flock()ed by its writer while open

A put writes into a temp file in the same directory (so the final rename is atomic), hashing
while copying (whole blocks with O_DIRECT, see `cache.directio`), then fsyncs the file, renames
it over its final name and fsyncs the directory.
Putting the same content twice is harmless (the second temp file is dropped). Readers get a
`VerifyingReader`, which re-hashes what it returns and raises `CorruptBlob` at EOF/close; a blob found corrupt
is unlinked, so that the next build or pull puts the right bytes back (a put keeps an existing file).
A writer killed mid-way leaves only an unlocked ``.tmp-*`` file, which `BlobStore.clean_temp`
removes (it skips temp files whose writer still holds the lock).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cache import locks
from cache.directio import DirectWriter
from cache.errors import BlobNotFound, CorruptBlob, StoreError
from cache.model import ByteReader, Descriptor, Digest

CHUNK = 1 << 20
TEMP_PREFIX = ".tmp-"


class TempBlob:
    """A locked temp file in the blob directory; `finish` renames it to its digest name."""

    def __init__(self, directory: Path) -> None:
        self.path, fd = locks.create_locked(directory, TEMP_PREFIX)
        self.file: BinaryIO = os.fdopen(fd, "w+b", buffering=0)
        self.hasher = hashlib.sha256()
        self.writer = DirectWriter(fd, self.hasher)  # hashes what it writes, on its own thread
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        try:
            self.writer.write(data)
        except OSError as e:  # also a failed background write of an earlier block
            raise StoreError(f"write blob: {e.strerror}", path=self.path) from e
        self.size += len(data)
        return len(data)

    def finish(self, blobs: BlobStore, media_type: str = "") -> Descriptor:
        """Write out, fsync, rename into place (or drop if already present) and describe the result."""
        try:
            try:
                self.writer.close()
            except OSError as e:
                raise StoreError(f"write blob: {e.strerror}", path=self.path) from e
            digest = Digest.from_hex(self.hasher.hexdigest())
            final = blobs.path_for(digest)
            try:
                os.fsync(self.file.fileno())
                if final.exists():
                    self.path.unlink()
                else:
                    os.chmod(self.path, 0o444)
                    os.replace(self.path, final)
                    _fsync_dir(final.parent)
            except OSError as e:
                raise StoreError(f"put blob {digest}: {e.strerror}", path=self.path) from e
        finally:
            self.file.close()
        return Descriptor(media_type, digest, self.size)

    def discard(self) -> None:
        """Drop the temp file; idempotent."""
        if not self.file.closed:
            self.writer.close(keep=False)
            self.file.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    """sha256 blobs in ``<root>/blobs/sha256``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, digest: str) -> Path:
        """Where the blob would live (it may not exist); rejects malformed digests."""
        try:
            return self.dir / Digest(digest).hex
        except ValueError as e:
            raise StoreError(str(e)) from None

    def temp(self) -> TempBlob:
        """A new locked temp file; the caller must `finish` or `discard` it."""
        return TempBlob(self.dir)

    def put(self, data: bytes) -> Descriptor:
        return self.put_stream(io.BytesIO(data))

    def put_stream(self, src: ByteReader, on_chunk: Callable[[int], None] | None = None) -> Descriptor:
        """Copy ``src`` to EOF into the store, hashing while copying; constant memory."""
        tmp = self.temp()
        try:
            while chunk := src.read(CHUNK):
                tmp.write(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
            return tmp.finish(self)
        except BaseException:
            tmp.discard()
            raise

    def path(self, digest: str) -> Path:
        p = self.path_for(digest)
        if not p.is_file():
            raise BlobNotFound(digest, path=p)
        return p

    def has(self, digest: str) -> bool:
        try:
            return self.path_for(digest).is_file()
        except StoreError:
            return False

    def size(self, digest: str) -> int:
        p = self.path(digest)
        return p.stat().st_size

    def open(self, digest: str) -> VerifyingReader:
        p = self.path(digest)
        try:
            return VerifyingReader(open(p, "rb"), Digest(digest), p)
        except FileNotFoundError:
            raise BlobNotFound(digest, path=p) from None

    def verify(self, digest: str) -> None:
        """Re-hash a blob; raises CorruptBlob (and unlinks it) or BlobNotFound."""
        p = self.path(digest)
        try:
            with open(p, "rb") as f:
                actual = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()  # ~2x a read() loop's speed
        except FileNotFoundError:
            raise BlobNotFound(digest, path=p) from None
        if actual != digest:
            _drop_corrupt(p)
            raise CorruptBlob(digest, actual, path=p)

    def delete(self, digest: str) -> int:
        """Remove a blob; returns the bytes freed (0 if it was absent)."""
        p = self.path_for(digest)
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            return 0
        return size

    def digests(self) -> Iterator[Digest]:
        for entry in os.scandir(self.dir):
            if not entry.name.startswith(TEMP_PREFIX):
                try:
                    yield Digest.from_hex(entry.name)
                except ValueError:
                    continue

    def clean_temp(self) -> int:
        """Remove temp files no live writer holds; returns how many were removed."""
        return locks.clean_stale(self.dir, TEMP_PREFIX)


class VerifyingReader(io.RawIOBase):
    """A read-only stream over a blob that checks its sha256 when the end is reached.

    Raises CorruptBlob from the read that hits EOF, or from close() (which reads whatever the
    caller left unread, so a partial reader still gets the check).
    """

    def __init__(self, f: io.BufferedReader, digest: Digest, path: Path) -> None:
        super().__init__()
        self._f = f
        self._digest = digest
        self._path = path
        self._hasher = hashlib.sha256()
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = self._f.readinto(buf)
        if n:
            self._hasher.update(memoryview(buf)[:n])
        elif not self._verified:
            self._check()
        return n or 0

    def _check(self) -> None:
        self._verified = True
        actual = "sha256:" + self._hasher.hexdigest()
        if actual != self._digest:  # hashed again whole first: a Ctrl-C right after a read left its chunk unhashed
            actual = self._rehashed()
        if actual != self._digest:
            _drop_corrupt(self._path)
            raise CorruptBlob(self._digest, actual, path=self._path)

    def _rehashed(self) -> str:
        self._f.seek(0)
        hasher = hashlib.sha256()
        while chunk := self._f.read(CHUNK):
            hasher.update(chunk)
        return "sha256:" + hasher.hexdigest()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._verified:
                while chunk := self._f.read(CHUNK):
                    self._hasher.update(chunk)
                self._check()
        finally:
            self._f.close()
            super().close()


def _drop_corrupt(path: Path) -> None:
    """Unlink a blob found corrupt: no reader can use it, and a put of the right bytes would keep it otherwise."""
    try:
        path.unlink()
    except OSError:
        pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
