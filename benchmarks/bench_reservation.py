"""Reservations: a task's round trip inside a reservation against a plain task's, and the warm
start of a reservation's executors (the first task builds a simulator, the next ones find it).

    python benchmarks/bench_reservation.py            # ~30 s
    python benchmarks/bench_reservation.py --rt 1000
    python benchmarks/bench_reservation.py --no-ray   # qsrv alone

An embedded local cluster of two CPUs (``qsrv.init(num_cpus=2)``). (1) Round trip: one no-op
task submitted and awaited, ``--rt`` times after a warm-up, plain and with
``.options(reservation=r)`` in turns of 100; medians. (2) Warm start: in a new reservation, a
task that imports qiskit-aer and builds an AerSimulator once per process (module-level cache),
run three times: the driver's wall time for each, and the time the first spent building.
Side by side, Ray's own reservations (placement groups, ``ray.init(num_cpus=2)``): the time to
hold one, and the same round trips, plain and with a ``PlacementGroupSchedulingStrategy``.
Dask has no reservation to compare with (its worker resources are counters, not held
capacity). Timings are reported, never asserted.
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


def _ray_round_trips(count: int) -> tuple[float, list[float], list[float]]:
    """Ray: seconds to hold a placement group of one CPU, then plain and placed round trips."""
    import logging

    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    try:
        @ray.remote(num_cpus=1)
        def ray_noop() -> None:
            return None

        t0 = time.perf_counter()
        pg = placement_group([{"CPU": 1}])
        ray.get(pg.ready(), timeout=60)
        held = time.perf_counter() - t0
        placed = ray_noop.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg))

        def trips(fn: Any, n: int) -> list[float]:
            out = []
            for _ in range(n):
                t1 = time.perf_counter()
                ray.get(fn.remote())
                out.append(time.perf_counter() - t1)
            return out

        trips(ray_noop, 50)
        trips(placed, 50)
        plain_rt: list[float] = []
        placed_rt: list[float] = []
        for _ in range(max(1, count // 100)):
            plain_rt += trips(ray_noop, 100)
            placed_rt += trips(placed, 100)
        remove_placement_group(pg)
        return held, plain_rt, placed_rt
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rt", type=int, default=600, help="round trips of each kind")
    parser.add_argument("--no-ray", action="store_true", help="leave Ray's side out")
    args = parser.parse_args()
    qsrv.init(num_cpus=2)
    try:
        t0 = time.perf_counter()
        r = qsrv.reserve({"cpu": 1}, name="bench").wait(60)
        held = time.perf_counter() - t0
        reserved = noop.options(reservation=r)
        _round_trips(noop, 50)
        _round_trips(reserved, 50)
        plain_rt: list[float] = []
        reserved_rt: list[float] = []
        for _ in range(max(1, args.rt // 100)):
            plain_rt += _round_trips(noop, 100)
            reserved_rt += _round_trips(reserved, 100)
        p, q = statistics.median(plain_rt) * 1e6, statistics.median(reserved_rt) * 1e6
        print(f"qsrv: reservation held in {held * 1e3:.1f} ms; round trip, median of "
              f"{len(plain_rt)}: plain {p:.0f} us, in a reservation {q:.0f} us ({q / p:.2f}x)")
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
    if args.no_ray:
        return
    ray_held, ray_plain, ray_placed = _ray_round_trips(args.rt)
    rp, rq = statistics.median(ray_plain) * 1e6, statistics.median(ray_placed) * 1e6
    print(f"ray: placement group held in {ray_held * 1e3:.1f} ms; round trip, median of "
          f"{len(ray_plain)}: plain {rp:.0f} us, in the placement group {rq:.0f} us "
          f"({rq / rp:.2f}x)")
    print(f"qsrv / ray, in a reservation: round trip {q / rq:.2f}x, time to hold "
          f"{held / ray_held:.3f}x")


if __name__ == "__main__":
    main()
