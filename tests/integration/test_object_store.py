"""Large values through the node stores of a real cluster: zero copy on a node, pulls between
two agents, reference counting back to baseline, a full store, a dead driver's objects."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import qsrv
from qsrv.errors import ObjectStoreFullError

from ._cluster import TOKEN, Cluster, cli_status, wait_for


def mapped_file(arr: Any) -> str:
    """The file mapped at ``arr``'s memory in this process ('' for private memory)."""
    addr = arr.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= addr < hi:
                return parts[5] if len(parts) > 5 else ""
    return ""


@qsrv.distribute_task
def inspect(x: Any) -> tuple[str, bool, float, int]:
    return (mapped_file(x), bool(x.flags.writeable), float(np.linalg.norm(x)),
            qsrv.runtime_context().worker_id)


@qsrv.distribute_task
def make(n: int) -> Any:
    return np.full(n, 1 / np.sqrt(n), dtype=np.complex128)


def store_stats(worker: int = 0) -> dict[str, int]:
    return dict(qsrv.status()["workers"][worker]["info"].get("store_stats") or {})


def test_same_node_is_zero_copy_for_tasks_and_driver(local_cluster: object) -> None:
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


def test_put_get_free_cycles_return_to_baseline(local_cluster: object) -> None:
    def rss() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) << 10

    vec = np.ones(10_000, dtype=np.complex128)  # 160 kB: above the store threshold
    for _ in range(200):  # warm up: arena pages, caches, allocator
        assert qsrv.get(qsrv.put(vec))[0] == 1
    wait_for(lambda: store_stats().get("objects") == 0, what="warm-up objects freed")
    before, reserved = rss(), store_stats()["reserved"]
    for i in range(10_000):
        got = qsrv.get(qsrv.put(vec))
        assert got[i % 10_000] == 1
        del got
    wait_for(lambda: store_stats().get("objects") == 0, what="objects freed")
    stats = store_stats()
    assert stats["used"] == 0 and stats["pinned"] == 0
    assert stats["reserved"] == reserved  # the arena did not grow: space was reused
    assert qsrv.status()["objects"] == 0
    assert rss() - before < 32 << 20


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
    qsrv.shutdown()
    cluster = Cluster()
    cluster.worker("a", "--cpus", "1", "--resources", "node_a=1",
                   "--object-store-memory", "64MiB")
    cluster.worker("b", "--cpus", "1", "--resources", "node_b=1",
                   "--object-store-memory", "4MiB")
    wait_for(lambda: cluster.ready({"a", "b"}), what="two workers")
    qsrv.init(address=cluster.address, token=TOKEN)
    try:
        yield cluster
    finally:
        qsrv.shutdown()
        cluster.stop()


def named(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(w for w in status["workers"] if w["name"] == name)


def test_objects_move_between_nodes_and_free_everywhere(two_nodes: Cluster) -> None:
    ref = make.options(target={"node_a": 1})(1 << 16)  # 1 MiB, made on a
    arena_b, writeable, norm, wid_b = qsrv.get(inspect.options(target={"node_b": 1})(ref))
    arena_a, _, _, wid_a = qsrv.get(inspect.options(target={"node_a": 1})(ref))
    assert arena_a != arena_b and arena_b.startswith("/dev/shm/qsrv-") and not writeable
    assert norm == pytest.approx(1.0)
    status = qsrv.status()
    assert (named(status, "a")["id"], named(status, "b")["id"]) == (wid_a, wid_b)
    # the driver's own get pulls it into this node's store (the first worker's here)
    assert qsrv.get(ref)[0] == pytest.approx(1 / 256)
    # a task with no target runs where its argument lies
    assert qsrv.get(inspect(ref))[3] in (wid_a, wid_b)
    del ref
    wait_for(lambda: all((w["info"].get("store_stats") or {}).get("objects") == 0
                         for w in qsrv.status()["workers"]), what="both copies freed")


def test_full_store_spills_then_says_so(two_nodes: Cluster) -> None:
    # b's store holds 4 MiB: three 1.5 MiB results fit only by spilling the oldest
    refs = [make.options(target={"node_b": 1})(98_304) for _ in range(3)]
    qsrv.wait(refs, num_returns=3, timeout=60)
    wait_for(lambda: (named(qsrv.status(), "b")["info"].get("store_stats") or {})
             .get("spills", 0) >= 1, what="a spill")
    # read back on b (restoring the spilled one) while the others stay where they are
    for ref in refs:
        assert qsrv.get(inspect.options(target={"node_b": 1})(ref))[2] == pytest.approx(1.0)
    with pytest.raises(ObjectStoreFullError, match="larger than the object store"):
        qsrv.get(make.options(target={"node_b": 1})(1 << 19))  # 8 MiB > 4 MiB
    line = next(line for line in cli_status(two_nodes.address).stdout.splitlines()
                if "store:" in line and "4.0 MiB" in line)
    assert "spilled" in line
    del refs


def test_a_dead_drivers_objects_are_freed(two_nodes: Cluster) -> None:
    code = (
        "import sys, numpy as np, qsrv\n"
        f"qsrv.init(address={two_nodes.address!r}, token={TOKEN!r})\n"
        "refs = [qsrv.put(np.ones(1 << 16, dtype=complex)) for _ in range(3)]\n"
        "view = qsrv.get(refs[0])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = dict(os.environ)
    env.pop("QSRV_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

        def objects() -> int:
            return sum((w["info"].get("store_stats") or {}).get("objects", 0)
                       for w in qsrv.status()["workers"])

        wait_for(lambda: objects() >= 3, what="the driver's objects")
        proc.kill()
        proc.wait(10)
        time.sleep(0.2)
        wait_for(lambda: objects() == 0, what="the dead driver's objects freed")
    finally:
        if proc.poll() is None:
            proc.kill()
