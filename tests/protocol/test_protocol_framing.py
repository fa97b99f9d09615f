"""FrameDecoder / encode_frame: round trips in every feeding pattern, and every limit.

A frame is ``u32 header_len | u32 nbuf | u64 len * nbuf | header | buffers``; the decoder must
hand back exactly the header and buffers that went in, however the bytes are chunked, and must
reject any size above its `Limits` as soon as that size is readable, before allocating for it.
"""

from __future__ import annotations

import array
import random
import struct
import tracemalloc
from collections.abc import Callable

import pytest

from qsrv.errors import RemoteProtocolError
from qsrv.protocol import HANDSHAKE_LIMITS, Buffer, FrameDecoder, Limits, encode_frame

from ._helpers import join

DIRECT = 256 * 1024  # the decoder's direct-read threshold
MiB = 2**20

Frame = tuple[bytes, list[bytes]]


def payload(n: int, seed: int = 0) -> bytes:
    """`n` bytes that differ from frame to frame and position to position."""
    if n == 0:
        return b""
    block = random.Random(seed).randbytes(min(n, 4096))
    return (block * (n // len(block) + 1))[:n]


# -- ways of delivering bytes to a decoder ---------------------------------------------------------
def feed_whole(dec: FrameDecoder, data: bytes) -> None:
    dec.feed(data)


def feed_bytewise(dec: FrameDecoder, data: bytes) -> None:
    for i in range(len(data)):
        dec.feed(data[i : i + 1])


def feed_random_chunks(dec: FrameDecoder, data: bytes, seed: int = 1) -> None:
    rng = random.Random(seed)
    view = memoryview(data)
    while view:
        n = rng.choice((1, 2, 3, 7, 8, 9, 100, 4095, 4096, 65536, DIRECT, 3 * DIRECT + 1))
        dec.feed(view[:n])
        view = view[n:]


def read_into(dec: FrameDecoder, data: bytes, seed: int = 2, max_chunk: int | None = None) -> None:
    """What asyncio's BufferedProtocol does: get_buffer(), copy up to its size, buffer_updated()."""
    rng = random.Random(seed)
    view = memoryview(data)
    while view:
        target = dec.get_buffer(-1)
        assert target.nbytes > 0, "get_buffer() returned an empty buffer"
        n = min(target.nbytes, view.nbytes)
        if max_chunk is not None:
            n = min(n, rng.randint(1, max_chunk))
        target[:n] = view[:n]
        view = view[n:]
        dec.buffer_updated(n)


FEEDERS: dict[str, Callable[[FrameDecoder, bytes], None]] = {
    "whole": feed_whole,
    "random-chunks": feed_random_chunks,
    "get_buffer": read_into,
    "get_buffer-small-reads": lambda dec, data: read_into(dec, data, max_chunk=5000),
}

BUFFER_SETS: dict[str, list[int]] = {
    "none": [],
    "one-empty": [0],
    "all-empty": [0, 0, 0],
    "small": [1, 17, 4096],
    "empty-between": [5, 0, 9, 0],
    "just-below-direct": [DIRECT - 1],
    "exactly-direct": [DIRECT],
    "just-above-direct": [DIRECT + 1],
    "mixed": [0, DIRECT + 5, 3, DIRECT - 1, 0, 2 * DIRECT + 7, 1],
    "20MiB": [20 * MiB],
    "20MiB-then-small": [20 * MiB, 0, 10],
}


def make_frame(header_len: int, sizes: list[int], seed: int = 0) -> Frame:
    header = payload(header_len, seed + 1000)
    return header, [payload(n, seed + i) for i, n in enumerate(sizes)]


def check_frames(got: list[tuple[bytes, list[Buffer]]], expected: list[Frame]) -> None:
    assert len(got) == len(expected)
    for (header, bufs), (exp_header, exp_bufs) in zip(got, expected, strict=True):
        assert bytes(header) == exp_header
        assert [memoryview(b).nbytes for b in bufs] == [len(b) for b in exp_bufs]
        for b, exp in zip(bufs, exp_bufs, strict=True):
            assert bytes(b) == exp


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize("feeder", FEEDERS)
@pytest.mark.parametrize("sizes", BUFFER_SETS.values(), ids=list(BUFFER_SETS))
def test_round_trip(feeder: str, sizes: list[int]) -> None:
    frame = make_frame(37, sizes)
    dec = FrameDecoder()
    FEEDERS[feeder](dec, join(encode_frame(*frame)))
    check_frames(dec.frames(), [frame])
    assert dec.frames() == []  # frames() hands each frame out once


@pytest.mark.parametrize("sizes", [[], [0], [3, 0, 5], [DIRECT + 3], [DIRECT - 2, 1]],
                         ids=["none", "empty", "small", "above-direct", "below-direct"])
def test_round_trip_byte_by_byte(sizes: list[int]) -> None:
    frames = [make_frame(20, sizes, seed=1), make_frame(0, [1], seed=2)]
    dec = FrameDecoder()
    feed_bytewise(dec, b"".join(join(encode_frame(*f)) for f in frames))
    check_frames(dec.frames(), frames)


@pytest.mark.parametrize("feeder", FEEDERS)
def test_many_frames_in_one_chunk(feeder: str) -> None:
    rng = random.Random(5)
    frames = []
    for i in range(60):
        sizes = [rng.choice((0, 1, 100, 5000, DIRECT - 1, DIRECT + 1))
                 for _ in range(rng.randint(0, 4))]
        frames.append(make_frame(rng.choice((0, 1, 50, 3000)), sizes, seed=i))
    dec = FrameDecoder()
    FEEDERS[feeder](dec, b"".join(join(encode_frame(*f)) for f in frames))
    check_frames(dec.frames(), frames)


def test_frames_collected_between_chunks_keep_order() -> None:
    frames = [make_frame(10, [i, DIRECT + i], seed=i) for i in range(6)]
    data = b"".join(join(encode_frame(*f)) for f in frames)
    dec = FrameDecoder()
    got = []
    for start in range(0, len(data), 70_001):
        dec.feed(data[start : start + 70_001])
        got.extend(dec.frames())
    check_frames(got, frames)


def test_header_larger_than_receive_area() -> None:
    frame = make_frame(3 * MiB + 11, [2, DIRECT * 2])
    for feeder in FEEDERS.values():
        dec = FrameDecoder()
        feeder(dec, join(encode_frame(*frame)))
        check_frames(dec.frames(), [frame])


def test_encode_frame_scatters_buffers_without_joining() -> None:
    bufs = [b"abc", bytearray(b""), memoryview(b"0123456789")[2:6]]
    pieces = encode_frame(b"hdr", bufs)
    assert len(pieces) == 1 + len(bufs)
    for piece, buf in zip(pieces[1:], bufs, strict=True):
        assert piece is buf
    assert join(pieces[:1]) == struct.pack("!IIQQQ", 3, 3, 3, 0, 4) + b"hdr"
    assert join(encode_frame(b"")) == struct.pack("!II", 0, 0)


def test_buffers_with_wide_items_are_counted_in_bytes() -> None:
    doubles = memoryview(array.array("d", [1.5, -2.0, 3.25]))
    ints = memoryview(array.array("i", range(1000)))
    dec = FrameDecoder()
    dec.feed(join(encode_frame(b"h", [doubles, ints])))
    [(header, bufs)] = dec.frames()
    assert bytes(header) == b"h"
    assert [bytes(b) for b in bufs] == [doubles.tobytes(), ints.tobytes()]


def test_large_buffer_is_read_in_place_without_second_copy() -> None:
    """A 20 MiB buffer read the asyncio way costs one 20 MiB allocation, not two."""
    data = join(encode_frame(b"x", [payload(20 * MiB)]))
    dec = FrameDecoder()
    tracemalloc.start()
    try:
        read_into(dec, data)
        frames = dec.frames()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    check_frames(frames, [(b"x", [payload(20 * MiB)])])
    assert peak < 20 * MiB + 4 * MiB, f"peak {peak / MiB:.1f} MiB: the buffer was copied"


def test_limits_exactly_at_the_bound_are_accepted() -> None:
    limits = Limits(max_header=100, max_buffers=3, max_buffer=DIRECT + 10,
                    max_frame=100 + 2 * (DIRECT + 10))
    frame = make_frame(100, [DIRECT + 10, DIRECT + 10, 0])
    dec = FrameDecoder(limits)
    read_into(dec, join(encode_frame(*frame)))
    check_frames(dec.frames(), [frame])


# -- limits: rejected as soon as the size is readable, before allocating for it -------------------
def prefix(header_len: int, lens: list[int], nbuf: int | None = None) -> bytes:
    n = len(lens) if nbuf is None else nbuf
    return struct.pack(f"!II{len(lens)}Q", header_len, n, *lens)


LIMITED = Limits(max_header=1000, max_buffers=4, max_buffer=5000, max_frame=8000)

# (name, bytes that must raise once fed in full, message fragment)
OVER_LIMIT = [
    ("max_header", prefix(1001, []), "header of 1001 bytes"),
    ("max_header-u32-max", prefix(2**32 - 1, []), "header of 4294967295 bytes"),
    ("max_buffers", prefix(0, [], nbuf=5), "5 buffers"),
    ("max_buffers-u32-max", prefix(0, [], nbuf=2**32 - 1), "4294967295 buffers"),
    ("max_buffer", prefix(0, [1, 5001]), "buffer of 5001 bytes"),
    ("max_buffer-u64-max", prefix(0, [2**64 - 1]), "buffer of 18446744073709551615"),
    ("max_frame", prefix(1000, [5000, 2001]), "frame of 8001 bytes"),
    ("max_frame-many-buffers", prefix(0, [2000, 2000, 2000, 2001]), "frame of 8001 bytes"),
]


@pytest.mark.parametrize("feeder", ["whole", "get_buffer", "bytewise"])
@pytest.mark.parametrize(("name", "data", "fragment"), OVER_LIMIT,
                         ids=[case[0] for case in OVER_LIMIT])
def test_limit_rejected_as_soon_as_readable(name: str, data: bytes, fragment: str,
                                            feeder: str) -> None:
    """No body is needed: the error comes with the last byte of the offending length."""
    dec = FrameDecoder(LIMITED)
    deliver = {"whole": feed_whole, "get_buffer": read_into, "bytewise": feed_bytewise}[feeder]
    *head, last = data
    deliver(dec, bytes(head))  # everything but the last byte of the size: nothing to say yet
    assert dec.frames() == []
    with pytest.raises(RemoteProtocolError, match=fragment):
        deliver(dec, bytes([last]))


@pytest.mark.parametrize(("name", "data"), [
    ("header", prefix(2**32 - 1, [])),
    ("buffer", prefix(10, [2**63])),
    ("frame", prefix(0, [2**32, 2**32, 1])),  # each buffer within its limit, the sum not
    ("buffers", prefix(0, [], nbuf=2**32 - 1)),
])
def test_default_limits_reject_huge_claims_without_allocating(name: str, data: bytes) -> None:
    dec = FrameDecoder()
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
            read_into(dec, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MiB, f"{peak} bytes allocated for a frame that was refused"


def test_handshake_limits_refuse_buffers_and_big_headers() -> None:
    assert HANDSHAKE_LIMITS.max_buffers == 0
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    with pytest.raises(RemoteProtocolError, match="1 buffers"):
        dec.feed(prefix(3, [0]))
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    with pytest.raises(RemoteProtocolError, match="header of 4097 bytes"):
        dec.feed(prefix(4097, []))
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    dec.feed(join(encode_frame(payload(4096))))
    check_frames(dec.frames(), [(payload(4096), [])])


def test_limit_error_is_sticky() -> None:
    """Once a stream is known to be bad, more bytes do not resynchronise it."""
    dec = FrameDecoder(LIMITED)
    with pytest.raises(RemoteProtocolError):
        dec.feed(prefix(1001, []))
    with pytest.raises(RemoteProtocolError):
        dec.feed(join(encode_frame(b"ok")))
    try:
        got = dec.frames()
    except RemoteProtocolError:
        got = []
    assert got == []
