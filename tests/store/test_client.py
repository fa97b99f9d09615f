"""Another process maps the arena by name and reads objects in place (spawned children)."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from qsrv.errors import ObjectLostError
from qsrv.store import Location, ObjectStore, StoreClient

MakeStore = Callable[..., ObjectStore]


def _reader(location: Location, out: Any) -> None:
    """Child: map the object, report what it sees, try to write."""
    with StoreClient(location.store) as client:
        arr = client.array(location, verify=True)
        arena = np.frombuffer(client.buffer, dtype=np.uint8)
        shares = bool(np.shares_memory(arr, arena))
        # Same address as the object's bytes inside this process's mapping of the arena.
        at_offset = (arr.__array_interface__["data"][0]
                     == arena.__array_interface__["data"][0] + location.offset)
        try:
            arr[0] = 0
            write = "allowed"
        except ValueError:
            write = "refused"
        try:
            client.view(location)[0] = 0
        except TypeError:
            write += ",view-refused"
        out.put((complex(arr.sum()), arr.shape, shares, at_offset, write))
        del arr, arena


def _producer(location: Location, out: Any) -> None:
    """Child: fill space the owner created, through a writable mapping."""
    with StoreClient(location.store, writable=True) as client:
        view = client.view(location)
        view[:] = bytes(range(256)) * (location.size // 256)
        view.release()
    out.put("done")


def _run(target: Callable[..., None], location: Location) -> Any:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(location, out))
    proc.start()
    try:
        result = out.get(timeout=60)
    finally:
        proc.join(timeout=60)
    assert proc.exitcode == 0
    return result


def test_child_reads_zero_copy_read_only(make_store: MakeStore) -> None:
    store = make_store(4 << 20)
    arr = (np.arange(1 << 16) * (1 + 2j)).astype(np.complex64).reshape(256, 256)
    store.put(1, b"", b"padding so the object is not at offset 0", holder="a")
    store.put(2, None, arr, holder="a")
    location = store.pin(2)  # the runtime pins before handing a Location to a reader
    total, shape, shares, at_offset, write = _run(_reader, location)
    store.unpin(2)
    assert location.offset > 0
    assert total == complex(arr.sum()) and shape == (256, 256)
    assert shares and at_offset
    assert write == "refused,view-refused"


def test_child_produces_in_place(make_store: MakeStore) -> None:
    store = make_store(1 << 20)
    location = store.reserve(5, 4096, holder="a")
    assert _run(_producer, location) == "done"
    store.seal(5, b"raw")
    assert bytes(store.get(5)[1]) == bytes(range(256)) * 16


def test_local_client_sees_owner_bytes_and_bad_names(make_store: MakeStore) -> None:
    store = make_store(1 << 20)
    location = store.put(3, b"h", b"hello", holder="a")
    with StoreClient(store.name) as client:
        assert client.get(location) == (b"h", client.view(location))
        assert bytes(client.view(location)) == b"hello"
        with pytest.raises(ValueError):
            client.view(Location(store.name, 3, store.capacity - 2, 5, b""))
        with pytest.raises(ValueError):
            client.view(Location("other", 3, 0, 5, b""))
    with pytest.raises(ObjectLostError):
        StoreClient("no-such-store-here")
