"""What `qsrv status` shows: workers, task counts by state, infeasible targets. Pure; reads
the scheduler's parts, changes nothing."""

from __future__ import annotations

from typing import Any

from qsrv._resources import display
from qsrv.scheduler._lifecycle import ASSIGNED, PENDING, READY, RUNNING
from qsrv.scheduler._placement import Shape, Worker, infeasible_reason
from qsrv.scheduler._records import Client, Obj, Task


def describe(objects: dict[int, Task | Obj], workers: dict[int, Worker],
             shapes: dict[tuple[tuple[str, int], ...], Shape], clients: dict[int, Client],
             asker: int = 0) -> dict[str, Any]:
    """Workers, task counts, infeasible targets; `clients` counts drivers but the asker."""
    counts = {"waiting": 0, "queued": 0, "running": 0, "infeasible": 0}
    infeasible: dict[tuple[tuple[str, int], ...], int] = {}
    values = 0
    for obj in objects.values():
        if type(obj) is not Task:
            values += 1
            continue
        if obj.state == PENDING:
            counts["waiting"] += 1
        elif obj.state == RUNNING:
            counts["running"] += 1
        elif obj.state == READY and not obj.shape.feasible:
            counts["infeasible"] += 1
            infeasible[obj.shape.key] = infeasible.get(obj.shape.key, 0) + 1
        elif obj.state in (READY, ASSIGNED):
            counts["queued"] += 1
    listed = list(workers.values())
    return {
        "workers": [w.describe() for w in listed],
        "tasks": counts,
        "infeasible": [
            {"target": display(shapes[k].need), "count": n,
             "reason": infeasible_reason(shapes[k], listed)}
            for k, n in infeasible.items()
        ],
        "objects": values,
        "clients": sum(1 for c in clients.values() if c.role == "driver" and c.conn != asker),
    }
