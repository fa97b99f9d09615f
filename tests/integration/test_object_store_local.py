"""Large values through the node store of an embedded local cluster: zero copy for tasks and
the driver, and put/get/free cycles that end where they began."""

from __future__ import annotations

import numpy as np
import pytest

import qsrv
from tests._support import wait_for
from tests._support.objects import inspect, make, mapped_file

pytestmark = pytest.mark.usefixtures("local_cluster", "_store_in_use")


@pytest.fixture(scope="module")
def _store_in_use(local_cluster: object) -> None:
    """A driver finds its node's store once the worker has registered it (it looks again
    every few seconds): until then large values travel inline."""
    big = np.ones(1 << 14, dtype=np.complex128)
    wait_for(lambda: mapped_file(qsrv.get(qsrv.put(big))).startswith("/dev/shm/qsrv-"),
             what="the driver to use the node's store")


def store_stats(worker: int = 0) -> dict[str, int]:
    return dict(qsrv.status()["workers"][worker]["info"].get("store_stats") or {})


def test_same_node_is_zero_copy_for_tasks_and_driver() -> None:
    vec = np.exp(1j * np.linspace(0, 1, 1 << 16))
    ref = qsrv.put(vec)
    arena, writeable, norm, _ = qsrv.get(inspect(ref))
    assert arena.startswith("/dev/shm/qsrv-") and not writeable
    assert norm == pytest.approx(np.linalg.norm(vec))
    got = qsrv.get(ref)
    assert mapped_file(got) == arena and not got.flags.writeable
    assert np.array_equal(got, vec)
    # a large argument passed by value goes through the store as well
    assert qsrv.get(inspect(vec))[0] == arena
    # and so does a large result
    made = qsrv.get(make(1 << 15))
    assert mapped_file(made) == arena and np.linalg.norm(made) == pytest.approx(1.0)
    small = qsrv.get(make(16))  # small values travel inline, in private memory
    assert mapped_file(small) == "" and small.flags.writeable


def test_put_get_free_cycles_return_to_baseline() -> None:
    def rss() -> int:
        """This process's private memory (not the store pages it has mapped and touched)."""
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon")) << 10

    vec = np.ones(10_000, dtype=np.complex128)  # 160 kB: above the store threshold
    for _ in range(200):  # warm up: arena pages, caches, allocator
        assert qsrv.get(qsrv.put(vec))[0] == 1
    # The worker reports its store's numbers with its heartbeats: wait for a report from
    # after the warm-up (space reserved), with everything freed.
    stats = wait_for(lambda: (s := store_stats()).get("reserved") and s["objects"] == 0 and s,
                     what="warm-up objects freed")
    before, reserved = rss(), stats["reserved"]
    for i in range(10_000):
        got = qsrv.get(qsrv.put(vec))
        assert got[i % 10_000] == 1
        del got
    stats = wait_for(lambda: (s := store_stats()).get("objects") == 0 and s["used"] == 0 and s,
                     what="objects freed")
    assert stats["pinned"] == 0
    assert stats["reserved"] == reserved  # the arena did not grow: space was reused
    assert qsrv.status()["objects"] == 0
    assert rss() - before < 32 << 20
