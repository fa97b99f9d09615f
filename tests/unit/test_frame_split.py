"""Every sender keeps its frames within what the receiver accepts: `Connection.send` splits a
batch by message count, header bytes, buffer count and buffer bytes; a single message too
large for any frame is refused at the sender with a clear LocalProtocolError."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsrv.errors import LocalProtocolError
from qsrv.protocol import (
    DEFAULT_LIMITS,
    FRAME_HEADER,
    FRAME_MESSAGES,
    Cancel,
    Connection,
    FrameDecoder,
    Limits,
    ObjectValue,
    PutObject,
    RefUpdate,
    StatusRequest,
    SubmitTask,
    decode_frame,
    encode_frame_of,
)

TOKEN = "frame-split-token"


def join(pieces: list[Any]) -> bytes:
    return b"".join(bytes(memoryview(p).cast("B")) for p in pieces)


def opened(server_limits: Limits = DEFAULT_LIMITS, client_peer: Limits | None = None
           ) -> tuple[Connection, Connection]:
    """A client and a server, OPEN; the server accepts ``server_limits`` (and says so)."""
    client = Connection(server=False, token=TOKEN, role="driver", peer_limits=client_peer)
    server = Connection(server=True, token=TOKEN, limits=server_limits)
    server.receive_data(join(client.initiate()))
    server.receive()
    client.receive_data(join(server.data_to_send()))
    client.receive()
    server.receive_data(join(client.data_to_send()))
    server.receive()
    client.receive_data(join(server.welcome(3, {"conn": 1})))
    assert client.receive() == []
    assert client.is_open() and server.is_open()
    return client, server


def frames_of(pieces: list[Any], limits: Limits) -> list[list[Any]]:
    """The messages of each frame in ``pieces``, read by a receiver enforcing ``limits``
    (RemoteProtocolError if one frame exceeds them)."""
    dec = FrameDecoder(limits)
    dec.feed(join(pieces))
    return [decode_frame(h, b, max_messages=limits.max_messages) for h, b in dec.frames()]


def submit(i: int, args: bytes = b"a", bufs: tuple[bytes, ...] = ()) -> SubmitTask:
    return SubmitTask((9 << 40) | i, b"f" * 16, args, bufs, [], {"cpu": 10000}, 0, 0.0,
                      False, "t")


# ---- count -----------------------------------------------------------------------------
def message_counts(pieces: list[Any], limits: Limits) -> list[int]:
    """Messages per frame (headers counted, not decoded), read by a receiver enforcing
    ``limits``."""
    dec = FrameDecoder(limits)
    dec.feed(join(pieces))
    return [len(msgpack.unpackb(h)) for h, _ in dec.frames()]


def test_a_mass_cancel_answer_leaves_in_frames_the_driver_accepts() -> None:
    """The scheduler's answer to a mass cancel was one frame of 700k messages; a driver
    accepts 262,144."""
    _, server = opened()
    n = DEFAULT_LIMITS.max_messages + 40_000
    batch = [ObjectValue(i, 2, b"cancelled", (), []) for i in range(n)]
    counts = message_counts(server.send(batch), DEFAULT_LIMITS)
    assert sum(counts) == n
    assert max(counts) <= min(FRAME_MESSAGES, DEFAULT_LIMITS.max_messages)


def test_a_mass_submit_reaches_the_scheduler_whole_and_in_order() -> None:
    client, server = opened()
    batch = [Cancel(i) for i in range(DEFAULT_LIMITS.max_messages + 40_000)]
    server.receive_data(join(client.send(batch)))
    assert server.receive() == batch


def test_a_small_batch_is_one_frame_as_encoded() -> None:
    client, _ = opened()
    batch = [StatusRequest(1), Cancel(5)]
    assert join(client.send(batch)) == join(encode_frame_of(batch))


# ---- header bytes and buffers ------------------------------------------------------------
TIGHT = Limits(max_header=400, max_buffers=3, max_buffer=1000, max_frame=1500, max_messages=7)


def test_split_by_header_bytes() -> None:
    client, _ = opened(client_peer=TIGHT)
    batch = [submit(i, args=b"x" * 100) for i in range(40)]  # ~ 150 header bytes each
    frames = frames_of(client.send(batch), TIGHT)
    assert [m for f in frames for m in f] == batch
    assert max(len(f) for f in frames) <= 2


def test_split_by_buffer_count_and_bytes() -> None:
    client, _ = opened(client_peer=TIGHT)
    batch = [PutObject((9 << 40) | i, b"", (b"b" * 400, b"c" * 300), []) for i in range(10)]
    frames = frames_of(client.send(batch), TIGHT)
    assert [m for f in frames for m in f] == batch
    assert all(len(f) == 1 for f in frames)  # two puts would carry 4 buffers, 1400+ bytes


def test_frames_of_the_default_aim_even_below_the_limits() -> None:
    """Far below the hard limits, frames still stay near FRAME_HEADER: a receiver decodes a
    frame in one go."""
    client, server = opened()
    big = b"y" * 100_000
    batch = [submit(i, args=big) for i in range(100)]  # 10 MB of headers
    pieces = client.send(batch)
    frames = frames_of(pieces, DEFAULT_LIMITS)
    assert len(frames) >= 3
    assert [m for f in frames for m in f] == batch
    server.receive_data(join(pieces))
    assert server.receive() == batch


# ---- a single message too large is refused at the sender ----------------------------------
@pytest.mark.parametrize(("message", "fragment"), [
    (submit(1, args=b"z" * 500), "its header is"),
    (PutObject(1, b"", (b"1", b"2", b"3", b"4"), []), "it has 4 buffers"),
    (PutObject(1, b"", (b"q" * 1001,), []), "a buffer of 1001 bytes"),
    (PutObject(1, b"", (b"q" * 800, b"r" * 800), []), "the peer accepts frames of 1500"),
])
def test_one_message_beyond_the_limits_is_a_local_error(message: Any, fragment: str) -> None:
    client, _ = opened(client_peer=TIGHT)
    with pytest.raises(LocalProtocolError, match=fragment):
        client.send([message])
    with pytest.raises(LocalProtocolError, match=fragment):  # also inside a larger batch
        client.send([Cancel(1), message, Cancel(2)])


def test_one_message_over_the_aim_but_within_the_limits_goes_alone() -> None:
    client, server = opened()
    big = submit(1, args=b"w" * (FRAME_HEADER + 10))
    batch = [Cancel(1), big, Cancel(2)]
    pieces = client.send(batch)
    assert [len(f) for f in frames_of(pieces, DEFAULT_LIMITS)] == [1, 1, 1]
    server.receive_data(join(pieces))
    assert server.receive() == batch


# ---- the server's limits travel in the handshake -------------------------------------------
def test_the_client_learns_the_schedulers_limits() -> None:
    small = Limits(max_messages=5)
    client, server = opened(server_limits=small)
    assert client.peer_limits == small
    assert "limits" not in client.info and client.info == {"conn": 1}
    batch = [RefUpdate([i], []) for i in range(23)]
    pieces = client.send(batch)
    assert [len(f) for f in frames_of(pieces, small)] == [5, 5, 5, 5, 3]
    server.receive_data(join(pieces))
    assert server.receive() == batch


def test_limits_given_to_the_client_win_over_advertised_ones() -> None:
    client, _ = opened(server_limits=Limits(max_messages=5), client_peer=TIGHT)
    assert client.peer_limits == TIGHT


# ---- any mix, any limits ------------------------------------------------------------------
messages = st.one_of(
    st.builds(lambda i, n: submit(i, args=b"s" * n), st.integers(0, 99), st.integers(0, 300)),
    st.builds(lambda i, sizes: PutObject(i, b"d", tuple(b"p" * n for n in sizes), []),
              st.integers(0, 99), st.lists(st.integers(0, 600), max_size=3)),
    st.builds(Cancel, st.integers(0, 2**40)),
)


@settings(max_examples=150)
@given(batch=st.lists(messages, max_size=60), max_messages=st.integers(1, 9),
       max_header=st.integers(400, 2000), max_buffers=st.integers(3, 6),
       max_frame=st.integers(2000, 4000))
def test_every_frame_within_any_limits(batch: list[Any], max_messages: int, max_header: int,
                                       max_buffers: int, max_frame: int) -> None:
    limits = Limits(max_header=max_header, max_buffers=max_buffers, max_buffer=600,
                    max_frame=max_frame, max_messages=max_messages)
    client, _ = opened(client_peer=limits)
    frames = frames_of(client.send(batch), limits) if batch else []
    assert [m for f in frames for m in f] == batch


# ---- the receive area shrinks back ----------------------------------------------------------
def test_receive_area_shrinks_after_a_large_header() -> None:
    dec = FrameDecoder()
    dec.feed(join(encode_frame_of([submit(1, args=b"h" * 5_000_000)])))
    assert len(dec.frames()) == 1
    assert len(dec.get_buffer()) < 2**20
