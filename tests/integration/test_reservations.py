"""Reservations with real processes (a CLI-started scheduler and workers): capacity nothing else
uses, tasks that run only inside it, release when the holder's process is killed, placement
again when its worker dies, infeasible targets with their reason, and warm executors (a
module-level cache survives from one of its tasks to the next)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import qsrv
from qsrv.errors import GetTimeoutError, ReservationError
from tests._support import Flag, stop_process, wait_for
from tests._support.cluster import TOKEN, Cluster, cli_env, cli_status

# A module-level cache, as engine code keeps its simulators: filled by the first task that runs
# in an executor, found again by the next one in the same process.
_CACHE: dict[str, Any] = {}


@qsrv.distribute_task
def where() -> tuple[int, int]:
    """(the executor's pid, its worker's id)."""
    return os.getpid(), qsrv.runtime_context().worker_id


@qsrv.distribute_task
def held(started: Flag, release: Flag) -> int:
    started.set()
    release.wait()
    return os.getpid()


@qsrv.distribute_task
def warm_up() -> dict[str, Any]:
    """Builds something costly once per process (imports a simulator library and makes a
    simulator), then reuses it; says how long its own start took."""
    t0 = time.perf_counter()
    if "sim" not in _CACHE:
        from qiskit_aer import AerSimulator

        _CACHE["sim"] = AerSimulator(method="statevector")
        _CACHE["runs"] = 0
    _CACHE["runs"] += 1
    return {"pid": os.getpid(), "runs": _CACHE["runs"], "setup_s": time.perf_counter() - t0}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    qsrv.shutdown()
    with Cluster() as c:
        yield c
    qsrv.shutdown()


def _join(c: Cluster, *workers: tuple[str, str]) -> None:
    for name, cpus in workers:
        c.worker(name, "--cpus", cpus)
    wait_for(lambda: c.ready({name for name, _ in workers}), what="the workers")
    qsrv.init(address=c.address, token=TOKEN)


def test_reserved_capacity_is_used_by_nothing_else(cluster: Cluster,
                                                   flags: Callable[[str], Flag]) -> None:
    _join(cluster, ("w", "2"))
    r = qsrv.reserve({"cpu": 1}, name="exclusive").wait(60)
    assert r.status == "ready" and r.worker == "w"
    # two plain tasks of one CPU each: one runs, the other waits for the reserved CPU
    release = flags("release")
    started = [flags("s1"), flags("s2")]
    plain = [held(started[i], release) for i in range(2)]
    wait_for(lambda: any(f.is_set() for f in started), what="a plain task to start")
    wait_for(lambda: qsrv.status()["tasks"]["queued"] == 1, what="the other to be queued")
    assert sum(f.is_set() for f in started) == 1
    # reserved tasks run meanwhile, in the reservation only: one executor, its own
    inside = qsrv.get([where.options(reservation=r)() for _ in range(6)], timeout=60)
    assert {wid for _, wid in inside} == {qsrv.status()["reservations"][0]["worker_id"]}
    [reserved_pid] = {pid for pid, _ in inside}
    release.set()
    plain_pids = qsrv.get(plain, timeout=60)
    assert reserved_pid not in plain_pids
    # once released, its capacity is everyone's again
    r.release()
    r.release()  # idempotent
    assert qsrv.status()["reservations"] == []
    with pytest.raises(ReservationError, match="released by its holder"):
        qsrv.get(where.options(reservation=r)(), timeout=60)
    again, release_again = [flags("a0"), flags("a1")], flags("release_again")
    both = [held(again[i], release_again) for i in range(2)]
    wait_for(lambda: all(f.is_set() for f in again), what="two plain tasks at once")
    release_again.set()
    assert len(set(qsrv.get(both, timeout=60))) == 2


def test_the_holders_death_releases_it(cluster: Cluster) -> None:
    cluster.worker("w", "--cpus", "1")
    wait_for(lambda: cluster.ready({"w"}), what="the worker")
    code = ("import sys, qsrv\n"
            f"qsrv.init(address={cluster.address!r}, token={TOKEN!r})\n"
            "r = qsrv.reserve({'cpu': 1}, name='held').wait(60)\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        qsrv.init(address=cluster.address, token=TOKEN)
        [listed] = qsrv.status()["reservations"]
        assert listed["name"] == "held" and listed["status"] == "ready"
        assert "held" in cli_status(cluster.address).stdout  # `qsrv status` lists it
        ref = where()  # the only CPU is reserved: it waits
        with pytest.raises(GetTimeoutError):
            qsrv.get(ref, timeout=0.5)
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        assert qsrv.get(ref, timeout=60)[0] > 0  # the capacity came back
        assert qsrv.status()["reservations"] == []
    finally:
        stop_process(holder, 10)


def test_a_reservation_whose_worker_dies_is_placed_again(cluster: Cluster) -> None:
    _join(cluster, ("a", "1"), ("b", "1"))
    r = qsrv.reserve({"cpu": 1}).wait(60)
    first = r.worker
    assert first in ("a", "b")
    _, wid = qsrv.get(where.options(reservation=r)(), timeout=60)
    cluster.workers[first].kill()
    wait_for(lambda: r.status == "ready" and r.worker not in (None, first), timeout=60,
             what="the reservation to be placed on the other worker")
    _, again = qsrv.get(where.options(reservation=r)(), timeout=60)
    assert again != wid
    [listed] = qsrv.status()["reservations"]
    assert listed["worker"] == r.worker


def test_an_infeasible_reservation_says_why(cluster: Cluster) -> None:
    _join(cluster, ("w", "1"))
    r = qsrv.reserve({"cpu": 64}, name="big")
    with pytest.raises(ReservationError, match="largest offered") as info:
        r.wait(60)
    assert r.status == "infeasible" and "cpu" in (info.value.reason or "")
    with pytest.raises(ReservationError, match="infeasible"):
        qsrv.get(where.options(reservation=r)(), timeout=60)
    [listed] = qsrv.status()["reservations"]
    assert listed["status"] == "infeasible" and "largest offered" in listed["reason"]
    assert "infeasible" in cli_status(cluster.address).stdout
    # with a timeout, it is released at its end, with the reason
    timed = qsrv.reserve({"cpu": 64}, timeout=1.0)
    wait_for(lambda: timed.status == "released", what="the timeout to release it")
    assert "timeout of 1 s" in (timed.reason or "")
    with pytest.raises(ReservationError):
        asyncio.run(timed.wait_async(5))


def test_executors_of_a_reservation_stay_warm(cluster: Cluster) -> None:
    _join(cluster, ("w", "2"))
    r = qsrv.reserve({"cpu": 1}, name="warm")
    asyncio.run(r.wait_async(60))  # the async wait, on asyncio
    timings = []
    results = []
    for _ in range(3):
        t0 = time.perf_counter()
        results.append(qsrv.get(warm_up.options(reservation=r)(), timeout=120))
        timings.append(time.perf_counter() - t0)
    assert len({res["pid"] for res in results}) == 1  # one dedicated executor, kept
    assert [res["runs"] for res in results] == [1, 2, 3]  # its module cache survived
    print(f"\nreservation task round trips: first {timings[0] * 1e3:.1f} ms (cold: import and "
          f"simulator built in {results[0]['setup_s'] * 1e3:.1f} ms), then "
          f"{timings[1] * 1e3:.1f} ms and {timings[2] * 1e3:.1f} ms (warm)")
    # a new reservation gets executors of its own: nothing of the released one's
    r.release()
    r2 = qsrv.reserve({"cpu": 1}).wait(60)
    fresh = qsrv.get(warm_up.options(reservation=r2)(), timeout=120)
    assert fresh["pid"] != results[0]["pid"] and fresh["runs"] == 1
