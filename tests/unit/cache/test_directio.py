"""Blobs are written around the page cache (cache.directio.DirectWriter, O_DIRECT).

What must hold: the file gets exactly the bytes written and the hasher sees them in order, whatever
the write sizes; whole blocks really go out with O_DIRECT (seen in /proc/self/fdinfo while writing);
a filesystem that refuses O_DIRECT (ramfs) still gets the same bytes; a write error of the
background thread (a full tmpfs) reaches the caller, and the blob store then keeps nothing."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest

from cache import StoreError
from cache.blobs import TEMP_PREFIX, BlobStore
from cache.directio import BLOCK, DirectWriter


def fd_flags(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError("no flags line in fdinfo")


def write_through(path: Path, pieces: list[bytes]) -> tuple[str, bool]:
    """Write ``pieces`` with a DirectWriter; returns (hasher digest, whether O_DIRECT was used)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        w = DirectWriter(fd, h)
        for p in pieces:
            w.write(p)
        direct = w.direct
        w.close()
    finally:
        os.close(fd)
    return h.hexdigest(), direct


@pytest.mark.parametrize("sizes", [
    [], [1], [BLOCK - 1], [BLOCK], [BLOCK + 1], [3 * BLOCK + 5],
    [7] * 1000 + [2 * BLOCK] + [4093] * 300,  # small pieces around one spanning several blocks
], ids=["empty", "one-byte", "block-1", "block", "block+1", "3-blocks+5", "mixed"])
def test_the_file_and_the_digest_are_exactly_the_bytes_written(tmp_path, sizes):
    pieces = [os.urandom(n) for n in sizes]
    data = b"".join(pieces)
    digest, _ = write_through(tmp_path / "f", pieces)
    assert (tmp_path / "f").read_bytes() == data
    assert digest == hashlib.sha256(data).hexdigest()


def test_whole_blocks_are_written_with_o_direct_and_the_tail_without(tmp_path):
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        w = DirectWriter(fd)
        if not w.direct:
            pytest.skip(f"the filesystem of {tmp_path} refuses O_DIRECT")
        w.write(b"a" * (2 * BLOCK + 10))
        assert fd_flags(fd) & os.O_DIRECT
        w.close()
        assert not fd_flags(fd) & os.O_DIRECT  # the 10-byte tail went through the page cache
    finally:
        os.close(fd)
    assert (tmp_path / "f").stat().st_size == 2 * BLOCK + 10


@contextlib.contextmanager
def mounted(fstype: str, where: Path, options: str = ""):
    if os.geteuid() != 0:
        pytest.skip(f"needs root to mount a {fstype}")
    where.mkdir()
    cmd = ["mount", "-t", fstype, *(["-o", options] if options else []), fstype, str(where)]
    subprocess.run(cmd, check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_filesystem_without_o_direct_gets_the_same_bytes(tmp_path):
    with mounted("ramfs", tmp_path / "ram") as ram:
        pieces = [os.urandom(BLOCK + 3), os.urandom(11)]
        digest, direct = write_through(ram / "f", pieces)
        assert direct is False
        assert (ram / "f").read_bytes() == b"".join(pieces)
        assert digest == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_a_full_disk_fails_the_blob_and_keeps_nothing(tmp_path):
    with mounted("tmpfs", tmp_path / "small", "size=6m") as small:
        blobs = BlobStore(small)
        with pytest.raises(StoreError, match="No space left on device"):
            blobs.put_stream(io.BytesIO(os.urandom(8 * BLOCK)))
        assert list(blobs.dir.iterdir()) == []
        # and the store still works for what fits
        desc = blobs.put(b"small blob")
        assert [p.name for p in blobs.dir.iterdir() if not p.name.startswith(TEMP_PREFIX)] == [desc.digest.hex]


def test_store_blobs_are_written_with_o_direct(tmp_path):
    blobs = BlobStore(tmp_path / "store")
    data = os.urandom(2 * BLOCK + 100)
    tmp = blobs.temp()
    if not tmp.writer.direct:
        tmp.discard()
        pytest.skip(f"the filesystem of {tmp_path} refuses O_DIRECT")
    tmp.write(data)
    flags = fd_flags(tmp.file.fileno())
    desc = tmp.finish(blobs)
    assert flags & os.O_DIRECT, "the blob's temp file was written through the page cache"
    assert desc.digest == "sha256:" + hashlib.sha256(data).hexdigest() and desc.size == len(data)
    assert blobs.path(desc.digest).read_bytes() == data
