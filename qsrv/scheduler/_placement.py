"""Placement: which worker a task may run on, and what it holds while it runs. Pure.

Amounts are exact integers (see qsrv._resources). A worker's GPUs are individual devices, each
with SCALE units: a task asking for n >= 1 GPUs gets n whole free devices; a task asking for a
fraction gets part of one device (the fullest that still fits, to keep whole devices free).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from qsrv._resources import SCALE, display, fits

if TYPE_CHECKING:
    from qsrv.scheduler._records import Task


class Shape:
    """One distinct target, shared by all tasks that ask for it; holds their ready queue."""

    __slots__ = ("feasible", "gpu", "key", "need", "queue", "warned")

    def __init__(self, need: dict[str, int]) -> None:
        self.need = need
        self.key = tuple(sorted(need.items()))
        self.gpu = need.get("gpu", 0)
        self.queue: deque[Task] = deque()  # ready tasks, oldest first (may hold dead entries)
        self.feasible = False
        self.warned = False


class Executor:
    """An executor subprocess of a worker; runs one task at a time."""

    __slots__ = ("conn", "fns", "pid", "queue", "task", "worker")

    def __init__(self, conn: int, worker: Worker, pid: int) -> None:
        self.conn = conn
        self.worker = worker
        self.pid = pid
        self.task: Task | None = None  # the task it runs (holding the shape's capacity)
        # Tasks sent ahead, in the order the executor will run them; the running task's
        # capacity passes to the next. Cancelled ones stay as placeholders (results dropped).
        self.queue: deque[Task] = deque()
        self.fns: set[bytes] = set()  # functions this executor already has


class Worker:
    """A worker agent: its capacity, what is free, and its executors."""

    __slots__ = (
        "conn",
        "executors",
        "free",
        "gpu_free",
        "id",
        "idle",
        "info",
        "last_seen",
        "name",
        "pid",
        "spawning",
        "total",
    )

    def __init__(self, wid: int, conn: int, name: str, total: dict[str, int],
                 gpu_ids: list[str], pid: int, info: dict[str, Any], now: float) -> None:
        self.id = wid
        self.conn = conn
        self.name = name
        self.total = dict(total)
        if gpu_ids:
            self.total["gpu"] = len(gpu_ids) * SCALE
        else:
            self.total.pop("gpu", None)
        self.free = dict(self.total)
        self.gpu_free = dict.fromkeys(gpu_ids, SCALE)
        self.pid = pid
        self.info = info
        self.executors: dict[int, Executor] = {}
        self.idle: list[Executor] = []
        self.spawning = 0
        self.last_seen = now

    def could_ever_fit(self, shape: Shape) -> bool:
        return fits(shape.need, self.total)

    def pick_gpus(self, amount: int) -> list[str] | None:
        """Devices for a GPU request, or None if the free devices cannot hold it."""
        if amount >= SCALE:
            whole = [d for d, f in self.gpu_free.items() if f == SCALE]
            count = amount // SCALE
            return whole[:count] if len(whole) >= count else None
        candidates = [(f, d) for d, f in self.gpu_free.items() if f >= amount]
        return [min(candidates)[1]] if candidates else None

    def fits_now(self, shape: Shape) -> bool:
        if not fits(shape.need, self.free):
            return False
        return not shape.gpu or self.pick_gpus(shape.gpu) is not None

    def acquire(self, need: dict[str, int], gpu_ids: list[str] | None) -> None:
        free = self.free
        for key, amount in need.items():
            free[key] = free.get(key, 0) - amount
        if gpu_ids:
            share = need["gpu"] if need["gpu"] < SCALE else SCALE
            for d in gpu_ids:
                self.gpu_free[d] -= share

    def release(self, need: dict[str, int], gpu_ids: list[str] | None) -> None:
        free = self.free
        for key, amount in need.items():
            free[key] = free.get(key, 0) + amount
        if gpu_ids:
            share = need["gpu"] if need["gpu"] < SCALE else SCALE
            for d in gpu_ids:
                self.gpu_free[d] += share

    def load(self) -> float:
        """Fraction of CPU in use (0 when the worker has no CPU)."""
        total = self.total.get("cpu", 0)
        return 1.0 - self.free.get("cpu", 0) / total if total else 0.0

    def describe(self) -> dict[str, Any]:
        running = sum(1 for e in self.executors.values() if e.task is not None)
        return {
            "id": self.id, "name": self.name, "pid": self.pid,
            "total": display(self.total), "free": display(self.free),
            "gpu_ids": list(self.gpu_free), "executors": len(self.executors),
            "running": running, "info": self.info,
        }


def choose_worker(shape: Shape, workers: list[Worker], prefer: int = 0
                  ) -> tuple[Worker | None, Worker | None]:
    """(worker with an idle executor where the shape fits now: worker ``prefer`` (the one
    holding the task's largest arguments) if it qualifies, else the least loaded;
    else a worker where it fits but no executor is idle — one that needs another executor)."""
    best: Worker | None = None
    best_load = 2.0
    needs_executor: Worker | None = None
    for w in workers:
        if not w.fits_now(shape):
            continue
        if w.idle:
            if w.id == prefer:
                return w, None
            load = w.load()
            if load < best_load:
                best, best_load = w, load
        elif needs_executor is None:
            needs_executor = w
    return best, needs_executor


def infeasible_reason(shape: Shape, workers: list[Worker]) -> str:
    want = display(shape.need)
    if not workers:
        return f"target {want} cannot run: no worker is connected"
    largest: dict[str, int] = {}
    for w in workers:
        for key, amount in w.total.items():
            largest[key] = max(largest.get(key, 0), amount)
    short = [k for k, v in shape.need.items() if largest.get(k, 0) < v]
    have = display({k: largest.get(k, 0) for k in short}) if short else {}
    return (f"target {want} fits no connected worker ({len(workers)} connected); "
            f"largest offered: {have or 'no single worker holds all of it'}")
