"""checksum and copy_into (into mmap and SharedMemory), against each implementation."""

from __future__ import annotations

import mmap
import zlib
from multiprocessing import shared_memory

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsrv.codec._statevec_fallback import crc32_combine
from qsrv.codec._statevec_format import Codec

# Large enough that 2..7 threads each get a range (ranges are >= 1 MiB), and not a multiple
# of the page size or of 16, so every tail path runs.
BIG = (3 << 20) + 4099


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize(
    ("nbytes", "threads"), [((3 << 20) + 1, 3), ((2 << 20) + 1, 2), ((4 << 20) - 1, 4)]
)
def test_thread_ranges_cover_every_byte(codec: Codec, nbytes: int, threads: int) -> None:
    data = random_bytes(nbytes, seed=nbytes)
    dst = bytearray(nbytes)
    assert codec.copy_into(dst, data, threads=threads) == zlib.crc32(data)
    assert dst == data
    assert codec.checksum(data, threads=threads) == zlib.crc32(data)


@pytest.mark.parametrize("threads", [None, 1, 2, 3, 7])
def test_checksum_matches_zlib(codec: Codec, threads: int | None) -> None:
    data = random_bytes(BIG)
    assert codec.checksum(data, threads=threads) == zlib.crc32(data)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), offset=st.integers(0, 15))
def test_checksum_and_copy_any_length_and_alignment(codec: Codec, data: bytes,
                                                     offset: int) -> None:
    src = memoryview(bytes(offset) + data)[offset:]  # misaligned start
    assert codec.checksum(src) == zlib.crc32(data)
    dst = bytearray(len(data) + 3)
    assert codec.copy_into(memoryview(dst)[1:], src) == zlib.crc32(data)
    assert dst == b"\0" + data + b"\0\0"  # exactly the range, nothing beyond


@pytest.mark.parametrize("threads", [None, 1, 2, 3, 7])
def test_copy_into_anonymous_mmap(codec: Codec, threads: int | None) -> None:
    data = random_bytes(BIG, seed=threads or 0)
    with mmap.mmap(-1, BIG + 100) as m:  # fresh pages
        crc = codec.copy_into(m, data, threads=threads)
        assert crc == zlib.crc32(data)
        assert m[:BIG] == data and m[BIG:] == bytes(100)
        # again into the now-warm pages, from a state vector in Fortran order
        arr = np.asfortranarray(
            np.frombuffer(data[: (BIG // 16) * 16], np.complex128)[: 1 << 16].reshape(256, 256)
        )
        header, raw = codec.encode(arr)
        crc = codec.copy_into(m, arr, threads=threads)
        assert codec.encode_header(arr, checksum=crc) == header
        view = memoryview(m)[: arr.nbytes]
        out = codec.decode(header, view)
        np.testing.assert_array_equal(out, arr)
        assert out.flags.f_contiguous and out.flags.writeable
        del out, view, raw  # release the exports before the mmap closes


def test_copy_into_shared_memory_seen_by_another_handle(codec: Codec) -> None:
    arr = np.frombuffer(random_bytes(1 << 21, seed=5), np.complex64).reshape(512, -1)
    header, raw = codec.encode(arr)
    shm = shared_memory.SharedMemory(create=True, size=arr.nbytes)
    try:
        crc = codec.copy_into(shm.buf, raw, threads=2)
        assert crc == parse_crc(header)
        other = shared_memory.SharedMemory(name=shm.name)  # as another process would
        try:
            assert other.buf is not None
            out = codec.decode(header, other.buf[: arr.nbytes])
            np.testing.assert_array_equal(out, arr)
            del out
        finally:
            other.close()
    finally:
        shm.close()
        shm.unlink()


def parse_crc(header: bytes) -> int:
    return int.from_bytes(header[16:20], "little")


def test_copy_into_rejects_bad_destinations(codec: Codec) -> None:
    data = random_bytes(4096)
    with pytest.raises(TypeError, match="read-only"):
        codec.copy_into(bytes(4096), data)
    with pytest.raises(ValueError, match="destination has 4095"):
        codec.copy_into(bytearray(4095), data)
    shared = bytearray(8192)
    with pytest.raises(ValueError, match="overlap"):
        codec.copy_into(memoryview(shared)[100:], memoryview(shared)[:4096])
    with pytest.raises(ValueError, match="contiguous"):
        codec.copy_into(bytearray(4096), memoryview(data)[::2])
    with pytest.raises(TypeError):
        codec.copy_into(bytearray(4096), "not a buffer")


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2"])
def test_bad_thread_counts_are_rejected(codec: Codec, threads: object) -> None:
    with pytest.raises(ValueError, match="threads"):
        codec.checksum(b"abc", threads=threads)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        codec.copy_into(bytearray(3), b"abc", threads=threads)  # type: ignore[arg-type]


def test_empty_buffers(codec: Codec) -> None:
    assert codec.checksum(b"") == 0
    assert codec.copy_into(bytearray(0), b"", threads=4) == 0


@given(a=st.binary(max_size=300), b=st.binary(max_size=300))
def test_crc32_combine_matches_zlib(a: bytes, b: bytes) -> None:
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
