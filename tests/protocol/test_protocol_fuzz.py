"""Fuzz: whatever bytes a peer sends, the sans-IO layer raises only ProtocolError subclasses.

No struct.error, no msgpack exception, no TypeError from a dataclass constructor, no
RecursionError, no MemoryError: a bad peer costs its own connection and nothing else.
Bounded to a few seconds: small Hypothesis budgets plus a seeded mutation loop.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsrv.errors import ProtocolError
from qsrv.protocol import (
    PROTOCOL_VERSION,
    Connection,
    FrameDecoder,
    Hello,
    Limits,
    State,
    decode_frame,
    encode_frame,
    encode_frame_of,
)
from qsrv.protocol._messages import _REGISTRY

from ._helpers import TOKEN, handshake, join
from ._strategies import any_message, any_value

# Post-handshake limits small enough that a fuzzed size cannot take gigabytes, large enough to
# reach the direct-read path for big buffers.
FUZZ_LIMITS = Limits(max_header=1 << 20, max_buffers=64, max_buffer=4 << 20, max_frame=8 << 20)
FUZZ = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REGISTERED = tuple(cls for cls, _, _ in _REGISTRY.values())


def deliver(receive_data: Callable[[bytes], None], receive: Callable[[], list[Any]],
            data: bytes, chunks: list[int]) -> list[Any]:
    """Feed `data` in the given chunk sizes, collecting messages; stop at a ProtocolError."""
    out: list[Any] = []
    view = memoryview(data)
    sizes = iter(chunks or [len(data)])
    try:
        while view:
            n = max(1, next(sizes, len(view)))
            receive_data(bytes(view[:n]))
            view = view[n:]
            out += receive()
    except ProtocolError:
        pass
    for msg in out:
        assert isinstance(msg, REGISTERED)
    return out


def decoder_then_decode(data: bytes, chunks: list[int], limits: Limits) -> None:
    dec = FrameDecoder(limits)

    def receive() -> list[Any]:
        return [m for hdr, bufs in dec.frames() for m in decode_frame(hdr, bufs)]

    deliver(dec.feed, receive, data, chunks)


# -- byte streams worth trying ---------------------------------------------------------------------
def frame_of_header(hdr: bytes, bufs: list[bytes]) -> bytes:
    return join(encode_frame(hdr, bufs))


garbage = st.binary(max_size=600)
chunking = st.lists(st.integers(1, 300), max_size=8)
# a well-formed frame around a random header: reaches msgpack and the validators
random_header_frame = st.builds(frame_of_header, st.binary(max_size=300),
                                st.lists(st.binary(max_size=40), max_size=3))
# a well-formed frame around a random msgpack value: reaches the message checks
random_value_frame = st.builds(
    lambda v, bufs: frame_of_header(msgpack.packb(v, use_bin_type=True), bufs),
    st.lists(st.lists(any_value, max_size=4).map(list) | any_value, max_size=3)
    | any_value,
    st.lists(st.binary(max_size=10), max_size=2),
)
# a message-shaped item with a real tag and random fields
tagged_item_frame = st.builds(
    lambda tag, fields, bufs: frame_of_header(msgpack.packb([[tag, *fields]], use_bin_type=True),
                                              bufs),
    st.sampled_from(sorted(_REGISTRY)),
    st.lists(any_value, max_size=11),
    st.lists(st.binary(max_size=10), max_size=2),
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    data = bytearray(join(encode_frame_of(draw(st.lists(any_message, min_size=1, max_size=3)))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set-u32"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "set-u32" and len(data) >= at + 4:
            value = draw(st.sampled_from([0, 1, 255, 4096, 2**31, 2**32 - 1]))
            data[at : at + 4] = struct.pack("!I", value)
    return bytes(data)


streams = st.one_of(garbage, random_header_frame, random_value_frame, tagged_item_frame,
                    mutated_frames(), st.lists(random_header_frame | mutated_frames(),
                                               max_size=3).map(b"".join))


# -- the decoder and decode_frame --------------------------------------------------------------
@FUZZ
@given(streams, chunking)
def test_decoder_and_decode_frame_raise_only_protocol_errors(data: bytes,
                                                             chunks: list[int]) -> None:
    decoder_then_decode(data, chunks, FUZZ_LIMITS)


DEPTHS = [900, 960, 990, 1000, 1010, 1020, 1023, 1030, 1100]


def nested_status_request(depth: int) -> bytes:
    """``[[16, [[[...0...]]]]]``: a StatusRequest whose req_id is a list `depth` levels deep."""
    hdr = b"\x91\x92\x10" + b"\x91" * depth + b"\x00"
    assert len(hdr) < 4096  # small enough to be sent before authentication
    return hdr


# Not under Hypothesis: it raises the recursion limit while a test runs, which hides this.
@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_field_is_a_protocol_error(depth: int) -> None:
    """A field nested ~1000 levels deep must be refused as malformed, not crash repr()."""
    with pytest.raises(ProtocolError):
        decode_frame(nested_status_request(depth), [])


@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_field_before_authentication_is_a_protocol_error(depth: int) -> None:
    server = Connection(server=True, token=TOKEN)
    server.receive_data(frame_of_header(nested_status_request(depth), []))
    with pytest.raises(ProtocolError):
        server.receive()


# -- a server Connection, before and after the handshake ----------------------------------------
@FUZZ
@given(streams, chunking)
def test_server_before_handshake_raises_only_protocol_errors(data: bytes,
                                                             chunks: list[int]) -> None:
    server = Connection(server=True, token=TOKEN, limits=FUZZ_LIMITS)
    got = deliver(server.receive_data, server.receive, data, chunks)
    assert got == []
    assert server.state is not State.OPEN


@FUZZ
@given(streams, chunking)
def test_server_after_hello_raises_only_protocol_errors(data: bytes, chunks: list[int]) -> None:
    server = Connection(server=True, token=TOKEN, limits=FUZZ_LIMITS)
    hello = join(encode_frame_of([Hello(PROTOCOL_VERSION, "driver", bytes(32))]))
    got = deliver(server.receive_data, server.receive, hello + data, chunks)
    assert got == []
    assert server.state is not State.OPEN


@FUZZ
@given(streams, chunking)
def test_open_server_raises_only_protocol_errors(data: bytes, chunks: list[int]) -> None:
    _, server = handshake()
    server._decoder.limits = FUZZ_LIMITS  # bound the sizes fuzzed frames may claim
    deliver(server.receive_data, server.receive, data, chunks)


@FUZZ
@given(streams, chunking)
def test_open_client_raises_only_protocol_errors(data: bytes, chunks: list[int]) -> None:
    client, _ = handshake()
    client._decoder.limits = FUZZ_LIMITS
    deliver(client.receive_data, client.receive, data, chunks)


def test_seeded_mutations_of_whole_transcripts() -> None:
    """Mutate a real client transcript (handshake + traffic) and replay it at a fresh server."""
    rng = random.Random(20240607)
    for _ in range(1000):
        client = Connection(server=False, token=TOKEN, role="driver")
        server = Connection(server=True, token=TOKEN, limits=FUZZ_LIMITS)
        data = bytearray(join(client.initiate()))
        data += join(encode_frame_of([Hello(PROTOCOL_VERSION, "worker", bytes(32))]))
        data += join(encode_frame(msgpack.packb([[rng.choice(sorted(_REGISTRY)), 1, b"x"]]),
                                  [b"b" * rng.randint(0, 9)]))
        for _ in range(rng.randint(1, 6)):
            if not data:
                break
            at = rng.randrange(len(data))
            op = rng.random()
            if op < 0.5:
                data[at] = rng.randrange(256)
            elif op < 0.7:
                del data[at:]
            elif op < 0.85:
                data[at:at] = rng.randbytes(rng.randint(1, 16))
            else:
                data[at : at + 4] = struct.pack("!I", rng.choice([0, 2**32 - 1, 4097, 8]))
        chunks = [rng.randint(1, 64) for _ in range(rng.randint(0, 5))]
        got = deliver(server.receive_data, server.receive, bytes(data), chunks)
        assert got == []
        assert server.state is not State.OPEN
