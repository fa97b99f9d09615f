"""Nested tasks three levels deep, hundreds of times with a seeded random shape, on 2 CPUs:
fan-outs wider than the executor cap once hung for ever (every executor blocked in `get`).
Also mixed with cancellations, and with a worker killed and replaced under it.

The suite runs a short version; the long one is the same tests with more rounds, e.g.
``QSRV_STRESS_RUNS=500 QSRV_STRESS_SEED=7 python -m pytest tests/integration/test_nested_stress.py``
(each test runs that many rounds).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

import qsrv
from tests._support import nested, wait_for
from tests._support.cluster import TOKEN, Cluster

SEED = int(os.environ.get("QSRV_STRESS_SEED", "20261130"))
RUNS = int(os.environ.get("QSRV_STRESS_RUNS", "30"))


@pytest.fixture(autouse=True)
def _no_driver() -> Iterator[None]:
    qsrv.shutdown()
    yield
    qsrv.shutdown()


def test_nested_fan_outs_never_hang() -> None:
    qsrv.init(num_cpus=2)
    outcome = nested.run(RUNS, SEED)
    assert outcome.runs == RUNS and outcome.values > 0, f"seed {SEED}: {outcome}"


def test_nested_with_cancellations() -> None:
    qsrv.init(num_cpus=2)
    outcome = nested.run(RUNS, SEED + 1, cancel_rate=0.3)
    assert outcome.runs == RUNS and outcome.cancelled > 0 and outcome.values > 0, \
        f"seed {SEED + 1}: {outcome}"


def test_nested_with_a_worker_killed() -> None:
    with Cluster() as cluster:
        cluster.worker("a", "--cpus", "1")
        cluster.worker("b", "--cpus", "1")
        wait_for(lambda: cluster.ready({"a", "b"}), what="two workers")
        qsrv.init(address=cluster.address, token=TOKEN)
        killed = threading.Event()

        def kill_then_replace() -> None:
            wait_for(lambda: cluster.status()["tasks"]["running"] > 2, what="tasks running")
            os.kill(cluster.workers["a"].pid, signal.SIGKILL)
            cluster.workers["a"].wait()
            cluster.worker("c", "--cpus", "1")
            killed.set()

        killer = threading.Thread(target=kill_then_replace, daemon=True)
        killer.start()
        outcome = nested.run(RUNS, SEED + 2, timeout=90)
        killer.join(60)
        assert killed.is_set() and outcome.runs == RUNS, f"seed {SEED + 2}: {outcome}"
