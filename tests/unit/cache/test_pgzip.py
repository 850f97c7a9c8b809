"""ParallelGzipCompressor: valid single-member gzip, the same bytes for any threads and chunking."""
from __future__ import annotations

import gzip
import os
import random
import struct
import subprocess
import threading
import zlib

import pytest
from zlib_ng import zlib_ng
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.pgzip import DICT, ParallelGzipCompressor, gzip_header

BS = 4096  # small blocks: many of them in little data
TEXT = bytes(b"abcdefghijklmnop"[i & 15] for i in range(256))


def _mixed(n: int, seed: int = 0) -> bytes:
    """Half random, half 16-symbol text, in alternating runs (so blocks of both kinds occur)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        run = rng.randbytes(rng.randrange(1, 3 * BS))
        out += run if rng.random() < 0.5 else run.translate(TEXT)
    return bytes(out[:n])


def _gz(data: bytes, level: int = 6, threads: int | None = 2, block_size: int = BS, pieces=None) -> bytes:
    c = ParallelGzipCompressor(level, threads=threads, block_size=block_size)
    out = [c.compress(p) for p in (pieces if pieces is not None else [data])]
    out.append(c.flush())
    c.close()  # safe after flush
    return b"".join(out)


def _check_single_member(out: bytes, data: bytes, level: int = 6) -> None:
    """Header as promised, one deflate stream ending right before the 8-byte trailer, trailer right."""
    assert out[:10] == gzip_header(level)
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    assert d.decompress(out[10:]) + d.flush() == data
    assert d.eof
    assert d.unused_data == out[-8:]
    assert struct.unpack("<II", out[-8:]) == (zlib.crc32(data), len(data) & 0xFFFFFFFF)


SIZES = [0, 1, BS - 1, BS, BS + 1, 2 * BS, DICT - 1, DICT + 1, 10 * BS + 17]


@pytest.mark.parametrize("n", SIZES)
def test_round_trip(n):
    data = _mixed(n, seed=n)
    out = _gz(data)
    assert gzip.decompress(out) == data
    d = zlib.decompressobj(31)
    assert d.decompress(out) + d.flush() == data and d.eof and not d.unused_data
    _check_single_member(out, data)


def test_empty_stream_is_one_final_empty_block():
    out = _gz(b"")
    assert out == gzip_header(6) + b"\x03\x00" + bytes(8)
    assert gzip.decompress(out) == b""


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_levels_and_xfl(level):
    data = _mixed(5 * BS + 3, seed=level)
    out = _gz(data, level=level)
    assert out[8] == {1: 4, 9: 2}.get(level, 0)
    _check_single_member(out, data, level)


def test_default_block_size_several_blocks():
    bs = 1 << 20
    data = _mixed(3 * bs + 12345, seed=7)
    out = _gz(data, block_size=bs)
    _check_single_member(out, data)
    for n in (bs - 1, bs, bs + 1):
        _check_single_member(_gz(data[:n], block_size=bs), data[:n])


def test_gzip_tool_accepts_it(tmp_path):
    data = _mixed(20 * BS + 5, seed=3)
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(_gz(data))
    subprocess.run(["gzip", "-t", str(path)], check=True)
    got = subprocess.run(["gzip", "-dc", str(path)], check=True, capture_output=True).stdout
    assert got == data


def test_compression_close_to_one_stream():
    """Cutting into blocks costs little against one long stream of the same deflate (zlib-ng)."""
    data = _mixed(64 * BS, seed=5)
    single = zlib_ng.compress(data, 6)
    assert len(_gz(data)) <= len(single) * 1.02


def test_header_is_fixed():
    out = _gz(b"hello")
    assert out[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no flags, mtime 0, OS 255


def test_same_bytes_for_any_thread_count():
    data = _mixed(40 * BS + 99, seed=11)
    outs = {threads: _gz(data, threads=threads) for threads in (1, 2, 4)}
    assert outs[1] == outs[2] == outs[4]
    assert gzip.decompress(outs[1]) == data


def test_caller_may_reuse_its_buffers():
    data = _mixed(9 * BS + 1, seed=13)
    c = ParallelGzipCompressor(threads=2, block_size=BS)
    out = []
    for i in range(0, len(data), 3 * BS + 5):
        buf = bytearray(data[i:i + 3 * BS + 5])
        out.append(c.compress(memoryview(buf) if i % 2 else buf))
        buf[:] = b"\0" * len(buf)
    out.append(c.flush())
    assert b"".join(out) == _gz(data)


def test_whole_stream_in_one_call_stays_bounded():
    """A caller chunk of many blocks is compressed with at most 2 * threads blocks in flight."""
    c = ParallelGzipCompressor(threads=2, block_size=BS)
    seen = []
    submit = c._submit

    def spying_submit(block, last):
        submit(block, last)
        seen.append(len(c._futures))

    c._submit = spying_submit  # type: ignore[method-assign]
    data = _mixed(50 * BS, seed=17)
    out = c.compress(data) + c.flush()
    assert max(seen) <= 4 and len(seen) == 51
    assert out == _gz(data, threads=1)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


DATA = _mixed(12 * BS + 321, seed=19)
REFERENCE = _gz(DATA, threads=1)


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(DATA)), max_size=40),
       threads=st.sampled_from([1, 2, 4]),
       kinds=st.lists(st.sampled_from(["bytes", "bytearray", "memoryview"]), min_size=1, max_size=5))
def test_same_bytes_for_any_chunking(cuts, threads, kinds):
    pieces = _chunks(DATA, cuts)
    typed = [p if k == "bytes" else bytearray(p) if k == "bytearray" else memoryview(p)
             for p, k in zip(pieces, kinds * len(pieces))]
    assert _gz(DATA, threads=threads, pieces=typed) == REFERENCE


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=3 * BS), split=st.integers(min_value=0))
def test_round_trip_any_bytes(data, split):
    cut = split % (len(data) + 1)
    out = _gz(data, pieces=[data[:cut], b"", data[cut:]])
    _check_single_member(out, data)
    assert out == _gz(data, threads=1)


# --- close / misuse

def test_close_mid_stream_is_prompt_and_final():
    c = ParallelGzipCompressor(threads=2, block_size=BS)
    c.compress(_mixed(30 * BS, seed=23))
    done = threading.Event()

    def closer():
        c.close()
        done.set()

    t = threading.Thread(target=closer, daemon=True)
    t.start()
    assert done.wait(30), "close() hung"
    c.close()  # idempotent
    with pytest.raises(ValueError):
        c.compress(b"more")
    with pytest.raises(ValueError):
        c.flush()


def test_close_stops_the_worker_threads():
    before = {t.ident for t in threading.enumerate()}
    c = ParallelGzipCompressor(threads=2, block_size=BS)
    c.compress(_mixed(20 * BS, seed=29))
    c.close()
    for t in threading.enumerate():
        if t.ident not in before and t.name.startswith("pybuild-pgzip"):
            t.join(30)
            assert not t.is_alive()


def test_close_before_anything_and_after_flush():
    ParallelGzipCompressor().close()
    c = ParallelGzipCompressor(block_size=BS)
    c.compress(b"x" * (3 * BS))
    c.flush()
    c.close()
    c.close()
    with pytest.raises(ValueError):
        c.compress(b"x")


def test_flush_twice_is_an_error():
    c = ParallelGzipCompressor()
    c.flush()
    with pytest.raises(ValueError):
        c.flush()


def test_bad_arguments():
    with pytest.raises(ValueError):
        ParallelGzipCompressor(block_size=0)
    with pytest.raises(ValueError):
        ParallelGzipCompressor(threads=0)
    with pytest.raises(ValueError):  # zlib's own error, at once rather than in a worker
        ParallelGzipCompressor(level=42)


def test_short_stream_starts_no_threads():
    before = threading.active_count()
    out = _gz(b"tiny", threads=4, block_size=BS)
    assert threading.active_count() == before
    assert gzip.decompress(out) == b"tiny"


def test_large_stream_default_block_size():
    data = os.urandom(4 << 20) + os.urandom(4 << 20).translate(TEXT)
    pieces = [data[i:i + 65536 + 512] for i in range(0, len(data), 65536 + 512)]
    out = _gz(data, block_size=1 << 20, pieces=pieces)
    _check_single_member(out, data)
    assert out == _gz(data, threads=1, block_size=1 << 20)
