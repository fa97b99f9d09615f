"""Reservations: a task's round trip inside a reservation against a plain task's, and the warm
start of a reservation's executors (the first task builds a simulator, the next ones find it).

    python benchmarks/bench_reservation.py            # ~20 s
    python benchmarks/bench_reservation.py --rt 1000

An embedded local cluster of two CPUs (``qsrv.init(num_cpus=2)``). (1) Round trip: one no-op
task submitted and awaited, ``--rt`` times after a warm-up, plain and with
``.options(reservation=r)`` in turns of 100; medians. (2) Warm start: in a new reservation, a
task that imports qiskit-aer and builds an AerSimulator once per process (module-level cache),
run three times: the driver's wall time for each, and the time the first spent building.
Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import qsrv

_CACHE: dict[str, Any] = {}


@qsrv.distribute_task
def noop() -> None:
    return None


@qsrv.distribute_task
def simulate() -> float:
    """Seconds spent building the simulator in this call (0 once it is cached)."""
    t0 = time.perf_counter()
    if "sim" not in _CACHE:
        from qiskit_aer import AerSimulator

        _CACHE["sim"] = AerSimulator(method="statevector")
    return time.perf_counter() - t0


def _round_trips(fn: Any, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        qsrv.get(fn())
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rt", type=int, default=600, help="round trips of each kind")
    args = parser.parse_args()
    qsrv.init(num_cpus=2)
    try:
        r = qsrv.reserve({"cpu": 1}, name="bench").wait(60)
        reserved = noop.options(reservation=r)
        _round_trips(noop, 50)
        _round_trips(reserved, 50)
        plain_rt: list[float] = []
        reserved_rt: list[float] = []
        for _ in range(max(1, args.rt // 100)):
            plain_rt += _round_trips(noop, 100)
            reserved_rt += _round_trips(reserved, 100)
        p, q = statistics.median(plain_rt) * 1e6, statistics.median(reserved_rt) * 1e6
        print(f"round trip, median of {len(plain_rt)}: plain {p:.0f} us, in a reservation "
              f"{q:.0f} us ({q / p:.2f}x)")
        r.release()
        fresh = qsrv.reserve({"cpu": 1}, name="warm").wait(60)
        task = simulate.options(reservation=fresh)
        walls, builds = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            builds.append(qsrv.get(task()))
            walls.append(time.perf_counter() - t0)
        print(f"warm start in a reservation: first task {walls[0] * 1e3:.1f} ms (of which "
              f"{builds[0] * 1e3:.1f} ms building the simulator), then "
              f"{walls[1] * 1e3:.2f} ms and {walls[2] * 1e3:.2f} ms")
    finally:
        qsrv.shutdown()


if __name__ == "__main__":
    main()
