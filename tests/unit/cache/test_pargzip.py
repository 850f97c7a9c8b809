"""Parallel gzip: one valid gzip member, the same bytes for any thread count and chunking."""
from __future__ import annotations

import gzip
import os
import random
import subprocess
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.compress import GzipCompressor
from cache.pargzip import DICT, ParallelGzipCompressor, crc32_combine

SMALL_BLOCK = 4 * DICT  # many blocks from little data


def gz(data: bytes, *, threads: int = 2, block_size: int = SMALL_BLOCK, cuts=None, level: int = 6) -> bytes:
    c = ParallelGzipCompressor(level, threads, block_size)
    pieces = [data] if cuts is None else cuts
    return b"".join(c.compress(p) for p in pieces) + c.flush()


def payload(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    half = n // 2
    return rng.randbytes(half) + bytes(rng.choices(b"the quick brown fox\n", k=n - half))


def single_member(out: bytes) -> bytes:
    """Check the header and that one deflate stream ends exactly at the 8-byte trailer; the data."""
    assert out[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # mtime 0, OS 255
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    data = d.decompress(out[10:]) + d.flush()
    assert d.eof and d.unused_data == out[-8:]
    crc, size = int.from_bytes(out[-8:-4], "little"), int.from_bytes(out[-4:], "little")
    assert crc == zlib.crc32(data) and size == len(data) & 0xFFFFFFFF
    return data


@pytest.mark.parametrize("n", [0, 1, DICT, SMALL_BLOCK - 1, SMALL_BLOCK, SMALL_BLOCK + 1, 7 * SMALL_BLOCK + 123])
def test_round_trip_at_block_edges(n):
    data = payload(n, n)
    out = gz(data)
    assert single_member(out) == data
    assert gzip.decompress(out) == data


def test_gzip_tool_accepts_it(tmp_path):
    data = payload(3 * SMALL_BLOCK + 5)
    path = tmp_path / "x.gz"
    path.write_bytes(gz(data))
    subprocess.run(["gzip", "-t", str(path)], check=True)
    assert subprocess.run(["gzip", "-dc", str(path)], check=True, capture_output=True).stdout == data


def test_size_close_to_one_stream():
    data = payload(2 << 20)
    c = GzipCompressor()
    one = c.compress(data) + c.flush()
    parallel = gz(data, block_size=1 << 20)
    assert len(parallel) <= len(one) * 1.01


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=6 * SMALL_BLOCK) | st.integers(0, 9 * SMALL_BLOCK).map(payload),
       cut_seed=st.integers(0, 2**32), threads=st.sampled_from([1, 2, 4]))
def test_same_bytes_for_any_threads_and_chunking(data, cut_seed, threads):
    rng = random.Random(cut_seed)
    cuts, i = [], 0
    while i < len(data):
        n = rng.choice([1, 100, DICT, SMALL_BLOCK - 1, SMALL_BLOCK * 2 + 1])
        cuts.append(data[i:i + n])
        i += n
    reference = gz(data, threads=1)
    assert gz(data, threads=threads, cuts=cuts) == reference
    assert single_member(reference) == data


@pytest.mark.parametrize("level, xfl", [(1, 4), (6, 0), (9, 2)])
def test_header_names_the_level(level, xfl):
    out = gz(b"x" * 1000, level=level)
    assert out[8] == xfl and gzip.decompress(out) == b"x" * 1000


@pytest.mark.parametrize("len1, len2", [(0, 0), (5, 0), (0, 7), (1, 1), (1000, 4097), (3, 1 << 20)])
def test_crc32_combine(len1, len2):
    a, b = os.urandom(len1), os.urandom(len2)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc32_combine_of_a_long_zero_run():
    """Lengths past 4 GiB use higher powers of the operator; zeros let zlib check it cheaply."""
    zeros = bytes(1 << 20)
    crc = 0
    for _ in range(16):
        crc = zlib.crc32(zeros, crc)
    assert crc32_combine(zlib.crc32(b"abc"), crc, 16 << 20) == zlib.crc32(zeros * 16, zlib.crc32(b"abc"))
    assert crc32_combine(0x12345678, 0, 5 << 30) == crc32_combine(crc32_combine(0x12345678, 0, 1 << 32), 0, 1 << 30)


def test_close_mid_stream_stops_the_workers():
    before = {t.ident for t in threading.enumerate()}
    c = ParallelGzipCompressor(6, 2, SMALL_BLOCK)
    c.compress(payload(20 * SMALL_BLOCK))
    c.close()
    c.close()  # idempotent
    with pytest.raises(ValueError, match="already flushed or closed"):
        c.compress(b"more")
    with pytest.raises(ValueError):
        c.flush()
    for t in threading.enumerate():
        if t.ident not in before and t.name.startswith("pybuild-gzip"):
            t.join(timeout=5)
            assert not t.is_alive()


def test_flush_ends_the_stream():
    c = ParallelGzipCompressor()
    out = c.compress(b"abc") + c.flush()
    assert gzip.decompress(out) == b"abc"
    with pytest.raises(ValueError):
        c.compress(b"x")
