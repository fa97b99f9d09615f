"""ObjectStore over real shared memory: put/get, create/seal, refcounts, pins, capacity."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable

import numpy as np
import pytest

from qsrv.codec import _statevec
from qsrv.errors import ObjectLostError, ObjectStoreFullError
from qsrv.store import ObjectStore

MakeStore = Callable[..., ObjectStore]
KiB = 1024


def _vec(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex128)


def test_put_statevector_builds_header_with_fused_checksum(make_store: MakeStore) -> None:
    store = make_store(1 << 20)
    arr = _vec(1000)
    loc = store.put(1, None, arr, holder="d")
    header, body = store.get(1)
    assert header == loc.header == _statevec.encode_header(arr)
    assert body.readonly and body.nbytes == arr.nbytes
    assert loc.offset % 64 == 0
    out = _statevec.decode(header, body, verify=True)
    assert np.array_equal(out, arr) and not out.flags.writeable
    assert store.checksum(1) == zlib.crc32(arr.tobytes())
    with pytest.raises(TypeError):
        body[0] = 1


def test_put_bytes_needs_header_and_roundtrips(make_store: MakeStore) -> None:
    store = make_store(1 << 20)
    with pytest.raises(TypeError):
        store.put(1, None, b"abc")
    store.put(2, b"hdr", b"payload", holder="d")
    header, body = store.get(2)
    assert (header, bytes(body)) == (b"hdr", b"payload")
    assert store.checksum(2) == zlib.crc32(b"payload")
    with pytest.raises(ValueError):
        store.put(2, b"", b"again")


def test_create_write_seal_in_place(make_store: MakeStore) -> None:
    store = make_store(1 << 20)
    view = store.create(7, 16, holder="producer")
    assert 7 not in store
    with pytest.raises(ValueError):
        store.get(7)  # not sealed yet
    view[:] = b"0123456789abcdef"
    view.release()
    loc = store.seal(7, b"h")
    assert 7 in store and loc.header == b"h" and bytes(store.get(7)[1]) == b"0123456789abcdef"
    with pytest.raises(ValueError):
        store.seal(7)
    store.create(8, 100)
    store.abort(8)
    assert store.stats()["objects"] == 1


def test_refcount_frees_at_zero_and_pin_defers(make_store: MakeStore) -> None:
    store = make_store(1 << 20)
    store.put(1, b"", b"x" * 1000, holder="a")
    store.incref(1, "b")
    store.decref(1, "a")
    assert 1 in store
    with pytest.raises(KeyError):
        store.decref(1, "a")
    store.pin(1)
    store.decref(1, "b")  # last ref, but a reader maps it
    assert 1 in store and store.stats()["used"] > 0
    store.unpin(1)
    assert 1 not in store and store.stats()["used"] == 0
    with pytest.raises(ObjectLostError):
        store.get(1)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_ten_thousand_cycles_leave_nothing_behind(make_store: MakeStore) -> None:
    store = make_store(8 << 20)
    vec = _vec(2048)  # 32 KiB
    blob = os.urandom(3000)

    def cycle(i: int) -> None:
        if i % 2:
            store.put(i, None, vec, holder="t")
        else:
            store.put(i, b"h", blob, holder="t")
        _header, body = store.get(i)
        assert body.nbytes in (vec.nbytes, len(blob))
        body.release()
        store.decref(i, "t")

    for i in range(500):  # warm up allocations, caches, interned objects
        cycle(i)
    baseline = _rss_kib()
    for i in range(500, 10_500):
        cycle(i)
    stats = store.stats()
    assert stats["used"] == 0 and stats["objects"] == 0
    assert _rss_kib() - baseline < 4 * KiB  # KiB: within 4 MiB of the baseline


def test_full_evicts_unreferenced_lru_first(make_store: MakeStore) -> None:
    store = make_store(64 * KiB)
    for i in range(4):  # cache copies: nobody holds them
        store.put(i, b"", bytes([i]) * (16 * KiB))
    store.get(0)  # 0 is now the most recently used
    store.put(10, b"", b"n" * (16 * KiB), holder="a")
    assert 1 not in store and {0, 2, 3, 10} <= {i for i in range(11) if i in store}
    assert store.stats()["evictions"] == 1


def test_full_spills_referenced_unpinned_and_restores_on_get(make_store: MakeStore) -> None:
    store = make_store(64 * KiB)
    arrays = [_vec(1024, seed=i) for i in range(4)]  # 16 KiB each: fills the arena
    for i, arr in enumerate(arrays):
        store.put(i, None, arr, holder="a")
    store.pin(3)
    store.put(10, b"", b"n" * (32 * KiB), holder="a")  # spills 0 and 1 (LRU), not pinned 3
    stats = store.stats()
    assert stats["spilled"] == 2 and stats["spills"] == 2 and stats["evictions"] == 0
    assert len(os.listdir(store.spill_dir)) == 2
    store.decref(10, "a")
    for i in (0, 1):
        header, body = store.get(i)  # restored
        assert np.array_equal(_statevec.decode(header, body, verify=True), arrays[i])
    assert store.stats()["spilled"] == 0 and store.stats()["restores"] == 2
    assert os.listdir(store.spill_dir) == []
    store.unpin(3)
    store.decref(0, "a")  # freeing a spilled object deletes its file
    store.put(11, b"", b"m" * (48 * KiB), holder="a")
    assert store.stats()["spilled"] >= 1
    for i in range(1, 4):
        store.decref(i, "a")
    assert os.listdir(store.spill_dir) == []


def test_full_when_everything_pinned_raises_clearly(make_store: MakeStore) -> None:
    store = make_store(64 * KiB)
    for i in range(4):
        store.put(i, b"", b"p" * (16 * KiB), holder="a")
        store.pin(i)
    with pytest.raises(ObjectStoreFullError) as info:
        store.put(9, b"", b"x" * 100, holder="a")
    msg = str(info.value)
    assert "needs 100 bytes" in msg and "capacity 65536" in msg and "4 pinned" in msg
    assert "0x3" in msg
    assert 9 not in store and store.stats()["objects"] == 4
    with pytest.raises(ObjectStoreFullError, match="larger than the object store"):
        store.create(10, 1 << 20)
    store.unpin(0)
    store.put(9, b"", b"x" * 100, holder="a")  # now 0 can be spilled
    assert store.stats()["spilled"] == 1


def test_close_unlinks_arena(tmp_path: os.PathLike[str]) -> None:
    store = ObjectStore(1 << 16, os.path.join(tmp_path, "s"), name=f"close-{os.getpid()}")
    path = f"/dev/shm/qsrv-{store.name}"
    assert os.path.getsize(path) == 1 << 16
    header, body = store.put(1, b"", b"abc", holder="a").header, store.get(1)[1]
    store.close()  # a view still alive: the name goes now, the mapping when the view goes
    assert not os.path.exists(path)
    assert bytes(body) == b"abc" and header == b""
