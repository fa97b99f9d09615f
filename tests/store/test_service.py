"""The node store as served by a worker agent: two services with separate stores (two nodes
on one machine), clients over the real Unix socket, transfers over real TCP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from qsrv.codec import dumps, loads
from qsrv.errors import (
    AuthenticationError,
    ChecksumError,
    ObjectLostError,
    ObjectStoreFullError,
)
from qsrv.protocol import Hello
from qsrv.protocol._messages import encode_frame_of
from qsrv.store import ObjectStore
from qsrv.store._arena import arena_path, sweep_stale
from qsrv.store._node import NodeStore, fetch
from qsrv.store._service import StoreService, describe_location, parse_location
from qsrv.transport import SyncConnection
from tests._support import wait_for

TOKEN = "store-test-token"


def make_service(tmp_path: object, name: str, wid: int, capacity: int = 64 << 20
                 ) -> StoreService:
    store = ObjectStore(capacity, f"{tmp_path}/spill-{name}", grow=True)
    service = StoreService(store, TOKEN, grace=0.2)
    service.worker_id = wid
    return service


@pytest.fixture
def nodes(tmp_path: object) -> Iterator[tuple[StoreService, StoreService]]:
    a, b = make_service(tmp_path, "a", 1), make_service(tmp_path, "b", 2)
    yield a, b
    a.close()
    b.close()


def in_arena(store: NodeStore, value: object) -> bool:
    """Whether ``value``'s bytes lie in a mapping of ``store``'s arena file (no copy)."""
    address = np.asarray(value).ctypes.data
    path = arena_path(store.name)
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return len(fields) == 6 and fields[5].strip() == path
    return False


def test_put_then_load_on_the_same_node_is_zero_copy_and_read_only(
        nodes: tuple[StoreService, StoreService]) -> None:
    a, _ = nodes
    client = NodeStore(a.socket_path, TOKEN)
    vec = np.exp(1j * np.arange(1 << 16)).astype(np.complex128)
    where = client.put(7, *dumps(vec)[:2])
    a.hold([7])
    value = loads(*client.load(7, where))
    assert np.array_equal(value, vec) and not value.flags.writeable
    assert in_arena(client, value)
    with pytest.raises(ValueError):
        value[0] = 0
    assert a.stats()["pinned"] == 1
    del value
    wait_for(lambda: a.stats()["pinned"] == 0, what="a unpinned")
    a.free([7])
    assert a.stats()["objects"] == 0 and a.stats()["used"] == 0
    client.close()


def test_cross_node_pull_verifies_and_frees_both_copies(
        nodes: tuple[StoreService, StoreService]) -> None:
    a, b = nodes
    copied: list[int] = []
    b.on_copied = copied.append
    producer, consumer = NodeStore(a.socket_path, TOKEN), NodeStore(b.socket_path, TOKEN)
    vec = (np.arange(1 << 18) * (1 + 2j)).astype(np.complex128)
    where = producer.put(11, *dumps(vec)[:2])
    a.hold([11])
    assert parse_location(where) == (1, a.stats()["used"], a.address)
    value = loads(*consumer.load(11, where))
    assert np.array_equal(value, vec)
    assert in_arena(consumer, value) and not in_arena(producer, value)
    assert copied == [11] and b.stats()["objects"] == 1
    del value
    wait_for(lambda: b.stats()["pinned"] == 0, what="b unpinned")
    a.free([11])
    b.free([11])  # the scheduler frees every copy it was told of
    assert a.stats()["used"] == 0 and b.stats()["used"] == 0


class FlipProxy:
    """Forwards TCP both ways; flips one byte of what the server sends after ``at`` bytes."""

    def __init__(self, target: str, at: int) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.at = at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
                threading.Thread(target=self._pump, args=(client, upstream, False),
                                 daemon=True).start()
                threading.Thread(target=self._pump, args=(upstream, client, True),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, flip: bool) -> None:
        seen = 0
        with contextlib.suppress(OSError):
            while data := bytearray(src.recv(1 << 16)):
                if flip and seen <= self.at < seen + len(data):
                    data[self.at - seen] ^= 0x40
                seen += len(data)
                dst.sendall(data)

    def close(self) -> None:
        self.listener.close()


def test_a_corrupted_transfer_is_detected_and_nothing_is_kept(
        nodes: tuple[StoreService, StoreService]) -> None:
    a, b = nodes
    producer, consumer = NodeStore(a.socket_path, TOKEN), NodeStore(b.socket_path, TOKEN)
    vec = np.ones(1 << 17, dtype=np.complex128)
    where = producer.put(21, *dumps(vec)[:2])
    a.hold([21])
    wid, size, _ = parse_location(where)
    proxy = FlipProxy(a.address, at=1 << 20)  # well inside the body
    try:
        with pytest.raises(ChecksumError, match="corrupted"):
            consumer.load(21, describe_location(wid, size, proxy.address))
    finally:
        proxy.close()
    assert b.stats()["objects"] == 0 and b.stats()["used"] == 0
    value = loads(*consumer.load(21, where))  # the direct path still works
    assert np.array_equal(value, vec)


def test_full_store_says_so_and_a_dead_writer_leaves_nothing(tmp_path: object) -> None:
    small = make_service(tmp_path, "small", 1, capacity=1 << 20)
    try:
        client = NodeStore(small.socket_path, TOKEN)
        with pytest.raises(ObjectStoreFullError, match="larger than the object store"):
            client.put(1, *dumps(np.zeros(1 << 18, dtype=np.complex128))[:2])
        # objects sealed but never confirmed by the directory go when their writer dies
        client.put(2, *dumps(np.zeros(1 << 14, dtype=np.complex128))[:2])
        assert small.stats()["objects"] == 1
        client.close()
        wait_for(lambda: small.stats()["objects"] == 0, what="objects freed")
    finally:
        small.close()


def test_pins_of_a_dead_reader_are_released(nodes: tuple[StoreService, StoreService]) -> None:
    a, _ = nodes
    writer, reader = NodeStore(a.socket_path, TOKEN), NodeStore(a.socket_path, TOKEN)
    where = writer.put(5, *dumps(np.zeros(1 << 14))[:2])
    a.hold([5])
    held = loads(*reader.load(5, where))
    assert a.stats()["pinned"] == 1
    reader.close()  # the process is gone; its views die with it
    wait_for(lambda: a.stats()["pinned"] == 0, what="a unpinned")
    a.free([5])
    assert a.stats()["objects"] == 0
    del held


def test_lost_objects_and_bad_peers_get_clear_errors(
        nodes: tuple[StoreService, StoreService]) -> None:
    a, b = nodes
    client = NodeStore(b.socket_path, TOKEN)
    with pytest.raises(ObjectLostError, match="no longer in this node's store"):
        client.load(99, describe_location(2, 10, b.address))
    with pytest.raises(ObjectLostError, match="peer has no object"):
        client.load(99, describe_location(1, 10, a.address))
    with pytest.raises(AuthenticationError):
        SyncConnection(a.address, "wrong-token", "transfer")
    with pytest.raises(AuthenticationError, match="not served here"):
        SyncConnection(a.address, TOKEN, "store")  # the TCP port serves transfers only
    with pytest.raises(AuthenticationError):
        SyncConnection(f"unix:{a.socket_path}", "wrong-token", "store")
    # garbage on the store socket closes that connection only
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(a.socket_path)
    raw.sendall(b"\xff" * 64)
    raw.settimeout(5)
    assert raw.recv(100) == b""
    raw.close()
    # a handshake-only peer sending a non-store message after auth is cut off too
    sc = SyncConnection(f"unix:{a.socket_path}", TOKEN, "store")
    sc.write(encode_frame_of([Hello(1, "store", b"x" * 32)]))
    with pytest.raises(Exception):  # noqa: B017 - closed by the service
        sc.receive(timeout=5) or sc.receive(timeout=5)
    assert NodeStore(a.socket_path, TOKEN).put(3, b"x" * 100, ()) is not None


def test_a_process_without_a_local_store_fetches_into_private_memory(
        nodes: tuple[StoreService, StoreService]) -> None:
    a, _ = nodes
    producer = NodeStore(a.socket_path, TOKEN)
    vec = np.arange(1 << 16, dtype=np.complex64)
    where = producer.put(31, *dumps(vec)[:2])
    a.hold([31])
    value = loads(*fetch(31, where, TOKEN))
    assert np.array_equal(value, vec) and not in_arena(producer, value)
    wid, size, _ = parse_location(where)
    proxy = FlipProxy(a.address, at=200_000)
    try:
        with pytest.raises(ChecksumError):
            fetch(31, describe_location(wid, size, proxy.address), TOKEN)
    finally:
        proxy.close()
    with pytest.raises(ObjectLostError, match="cannot be reached"):
        fetch(31, describe_location(wid, size, "127.0.0.1:1"), TOKEN)
    # the service unpins as each transfer connection closes, in its own threads
    wait_for(lambda: a.stats()["pinned"] == 0, what="the transfers' pins released")


def test_arenas_of_dead_owners_are_swept(tmp_path: object) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = f"{tmp_path}/qsrv-{int(dead.stdout)}-0123abcd"
    live = f"{tmp_path}/qsrv-{os.getpid()}-0123abcd"
    other = f"{tmp_path}/qsrv-named-by-a-test"
    for path in (stale, live, other):
        open(path, "wb").close()
    assert sweep_stale(str(tmp_path)) == [stale]
    assert os.path.exists(live) and os.path.exists(other) and not os.path.exists(stale)
