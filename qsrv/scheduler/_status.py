"""What `qsrv status` shows: workers, task counts by state, infeasible targets, the scheduler's
own health (event-loop lag). Pure; reads the scheduler's parts, changes nothing.

No scan over tasks: each shape counts its tasks by state (`Shape.counts`, kept by
`_lifecycle.set_state`), so a status costs the number of shapes and workers, whatever is
queued. Infeasible targets are listed largest first, at most `LISTED` of them
(``infeasible_more`` counts the others).
"""

from __future__ import annotations

from array import array
from typing import Any

from qsrv._resources import display
from qsrv.scheduler._lifecycle import ASSIGNED, PENDING, READY, RUNNING
from qsrv.scheduler._placement import Shape, Worker, infeasible_reason
from qsrv.scheduler._records import Client

LISTED = 100  # infeasible targets listed, at most


class LoopLag:
    """How late the scheduler's event loop ran, over the last `window` ticks: per tick, the
    longest delay of its timer and the time it was stalled in all. Kept in flat arrays: no
    objects made per tick (they would pin memory a drain frees)."""

    __slots__ = ("_elapsed", "_lags", "_n", "_stalls", "last", "stalled_total", "window")

    def __init__(self, window: int = 240) -> None:
        self.window = window
        self._lags = array("d", bytes(8 * window))
        self._stalls = array("d", bytes(8 * window))
        self._elapsed = array("d", bytes(8 * window))
        self._n = 0  # ticks recorded
        self.last = 0.0
        self.stalled_total = 0.0

    def record(self, elapsed: float, stalled: float, lag: float) -> None:
        i = self._n % self.window
        self._n += 1
        self._lags[i], self._stalls[i], self._elapsed[i] = lag, stalled, elapsed
        self.last = lag
        self.stalled_total += stalled

    def describe(self) -> dict[str, Any]:
        n = min(self._n, self.window)
        lags = self._lags[:n]
        elapsed = sum(self._elapsed[:n])
        stalled = sum(self._stalls[:n])
        return {
            "loop_lag_ms": {
                "last": round(self.last * 1e3, 3),
                "avg": round(sum(lags) / n * 1e3, 3) if n else 0.0,
                "max": round(max(lags) * 1e3, 3) if n else 0.0,
            },
            "stalled_fraction": round(stalled / elapsed, 4) if elapsed > 0 else 0.0,
            "window_s": round(elapsed, 3),
            "stalled_total_s": round(self.stalled_total, 3),
        }


def describe(objects: int, workers: dict[int, Worker],
             shapes: dict[tuple[tuple[str, int], ...], Shape], clients: dict[int, Client],
             asker: int = 0, scheduler: dict[str, Any] | None = None) -> dict[str, Any]:
    """Workers, task counts, infeasible targets; `clients` counts drivers but the asker.
    ``objects`` is the size of the directory (tasks and values)."""
    counts = {"waiting": 0, "queued": 0, "running": 0, "infeasible": 0}
    infeasible: list[tuple[int, Shape]] = []
    unfinished = 0
    for shape in shapes.values():
        c = shape.counts
        pending, ready, assigned, running = c[PENDING], c[READY], c[ASSIGNED], c[RUNNING]
        unfinished += pending + ready + assigned + running
        counts["waiting"] += pending
        counts["running"] += running
        counts["queued"] += assigned
        if shape.feasible:
            counts["queued"] += ready
        elif ready:
            counts["infeasible"] += ready
            infeasible.append((ready, shape))
    listed = list(workers.values())
    infeasible.sort(key=lambda item: -item[0])
    out: dict[str, Any] = {
        "workers": [w.describe() for w in listed],
        "tasks": counts,
        "infeasible": [
            {"target": display(shape.need), "count": n,
             "reason": infeasible_reason(shape, listed)}
            for n, shape in infeasible[:LISTED]
        ],
        "objects": objects - unfinished,
        "clients": sum(1 for c in clients.values() if c.role == "driver" and c.conn != asker),
    }
    if len(infeasible) > LISTED:
        out["infeasible_more"] = len(infeasible) - LISTED
    if scheduler is not None:
        out["scheduler"] = scheduler
    return out
