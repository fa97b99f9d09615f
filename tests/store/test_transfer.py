"""Object transfer between two stores ("nodes") over a real socketpair, and its failures."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

import numpy as np
import pytest

from qsrv.codec import _statevec
from qsrv.errors import ChecksumError, ObjectLostError, ObjectStoreFullError, RemoteProtocolError
from qsrv.store import (
    ObjectReceived,
    ObjectStore,
    TransferFailed,
    TransferReceiver,
    TransferSender,
    encode_request,
)
from qsrv.store._transfer import BEGIN, CHUNK, MAX_CHUNK

MakeStore = Callable[..., ObjectStore]
Corrupt = Callable[[int, bytes | memoryview], bytes | memoryview]


def _serve(sock: socket.socket, sender: TransferSender, corrupt: Corrupt | None) -> None:
    """Node A's side: answer every request until the peer closes."""
    with sock:
        while data := sock.recv(65536):
            for object_id in sender.receive_data(data):
                for i, buf in enumerate(sender.frames(object_id)):
                    sock.sendall(corrupt(i, buf) if corrupt else buf)


def _pull(store_a: ObjectStore, store_b: ObjectStore, object_ids: list[int],
          corrupt: Corrupt | None = None, chunk: int = 1 << 20) -> list[object]:
    """Node B pulls object_ids from node A; returns B's events in order."""
    a, b = socket.socketpair()
    thread = threading.Thread(
        target=_serve, args=(a, TransferSender(store_a, chunk_size=chunk), corrupt))
    thread.start()
    receiver = TransferReceiver(store_b, holder="b")
    events: list[object] = []
    try:
        for object_id in object_ids:
            b.sendall(encode_request(object_id))
        while len(events) < len(object_ids):
            n = b.recv_into(receiver.get_buffer())  # straight into B's arena for chunks
            assert n, "sender closed early"
            events += receiver.buffer_updated(n)
    finally:
        b.close()
        thread.join(timeout=30)
    return events


def test_pull_statevector_between_two_stores(make_store: MakeStore) -> None:
    node_a, node_b = make_store(16 << 20), make_store(16 << 20)
    arr = (np.random.default_rng(1).standard_normal(1 << 18) * 1j).astype(np.complex128)
    node_a.put(42, None, arr, holder="a")
    node_a.put(43, b"opaque", b"", holder="a")  # an empty body transfers too
    events = _pull(node_a, node_b, [42, 43], chunk=1 << 20)
    assert [type(e) for e in events] == [ObjectReceived, ObjectReceived]
    header, body = node_b.get(42)
    assert header == node_a.get(42)[0]
    assert np.array_equal(_statevec.decode(header, body, verify=True), arr)
    assert node_b.get(43) == (b"opaque", node_b.get(43)[1]) and node_b.get(43)[1].nbytes == 0
    assert node_a.stats()["pinned"] == 0  # the sender unpinned when done
    node_b.decref(42, "b")  # the receiver's holder took the first reference
    node_b.decref(43, "b")
    assert node_b.stats()["used"] == 0


def test_corrupted_transfer_is_detected_and_dropped(make_store: MakeStore) -> None:
    node_a, node_b = make_store(16 << 20), make_store(16 << 20)
    arr = np.arange(1 << 17, dtype=np.complex128)
    node_a.put(1, None, arr, holder="a")
    node_a.put(2, b"", b"fine", holder="a")

    def flip(i: int, buf: bytes | memoryview) -> bytes | memoryview:
        if i == 4:  # BEGIN, chunk header, chunk, chunk header, *second chunk*
            bad = bytearray(buf)
            bad[1000] ^= 0x01
            return bytes(bad)
        return buf

    events = _pull(node_a, node_b, [1], corrupt=flip, chunk=1 << 19)
    assert len(events) == 1 and isinstance(events[0], TransferFailed)
    assert isinstance(events[0].error, ChecksumError) and "0x1" in str(events[0].error)
    assert 1 not in node_b and node_b.stats()["used"] == 0
    assert np.array_equal(_statevec.decode(*node_a.get(1)), arr)  # the source is intact


def test_missing_object_and_full_receiver_keep_connection_usable(
    make_store: MakeStore,
) -> None:
    node_a, node_b = make_store(1 << 20), make_store(64 << 10)
    node_a.put(1, b"", b"z" * (512 << 10), holder="a")  # bigger than B's whole store
    node_a.put(2, b"h", b"small", holder="a")
    events = _pull(node_a, node_b, [9, 1, 2], chunk=64 << 10)
    assert isinstance(events[0], TransferFailed) and isinstance(events[0].error, ObjectLostError)
    assert isinstance(events[1], TransferFailed)
    assert isinstance(events[1].error, ObjectStoreFullError)
    assert isinstance(events[2], ObjectReceived) and bytes(node_b.get(2)[1]) == b"small"


def test_receiver_rejects_malformed_frames(make_store: MakeStore) -> None:
    store = make_store(1 << 20)
    frame = struct.Struct("<BQQ")
    with pytest.raises(RemoteProtocolError, match="unknown"):
        TransferReceiver(store).receive_data(frame.pack(99, 1, 0))
    with pytest.raises(RemoteProtocolError, match="not begun"):
        TransferReceiver(store).receive_data(frame.pack(CHUNK, 1, 10))
    with pytest.raises(RemoteProtocolError):
        TransferReceiver(store).receive_data(frame.pack(BEGIN, 1, 1 << 40))
    receiver = TransferReceiver(store)
    begin = frame.pack(BEGIN, 1, 12) + struct.pack("<QI", 100, 0)
    assert receiver.receive_data(begin) == []
    with pytest.raises(RemoteProtocolError, match="bytes are left"):
        receiver.receive_data(frame.pack(CHUNK, 1, 101))
    receiver.abort()  # the half-received object's space is given back
    assert store.stats()["used"] == 0 and MAX_CHUNK >= 1 << 20
    with pytest.raises(RemoteProtocolError):
        TransferSender(store).receive_data(frame.pack(CHUNK, 1, 0))


def test_receive_data_byte_by_byte(make_store: MakeStore) -> None:
    node_a, node_b = make_store(1 << 20), make_store(1 << 20)
    node_a.put(5, b"hdr", bytes(range(200)), holder="a")
    wire = b"".join(bytes(b) for b in TransferSender(node_a, chunk_size=64).frames(5))
    receiver = TransferReceiver(node_b)
    events = [e for i in range(len(wire)) for e in receiver.receive_data(wire[i:i + 1])]
    assert len(events) == 1 and isinstance(events[0], ObjectReceived)
    assert events[0].location.header == b"hdr"
    assert bytes(node_b.get(5)[1]) == bytes(range(200))
