"""Large values through the node stores of a cluster of two workers: pulls between two
agents, a full store, a dead driver's objects (one node: test_object_store_local.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import qsrv
from qsrv.errors import ObjectStoreFullError
from tests._support import stop_process, wait_for
from tests._support.cluster import TOKEN, Cluster, cli_status
from tests._support.objects import inspect, make


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
        wait_for(lambda: objects() == 0, what="the dead driver's objects freed")
    finally:
        stop_process(proc)
