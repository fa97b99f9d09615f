"""Placement: which worker a task may run on, and what it holds while it runs. Pure.

Amounts are exact integers (see qsrv._resources). A worker's GPUs are individual devices, each
with SCALE units: a task asking for n >= 1 GPUs gets n whole free devices; a task asking for a
fraction gets part of one device (the fullest that still fits, to keep whole devices free).

Choosing costs no scan of the workers (`PlacementIndex`): each shape in use keeps the workers
where it fits now, split into those with an idle executor (a heap by load, then worker id) and
those without (a heap by worker id), and the executors a task of the shape may be sent ahead to
(a heap by queue length, worker id, connection). The dispatcher tells the index whenever a
worker's free amounts or idle executors change (`PlacementIndex.update`, O(shapes indexed x
log workers)) and whenever an executor's running task or queue changes (`PlacementIndex.ahead`,
O(log executors)); a choice is O(log workers) amortized. Heap entries are checked against the
current key when they reach the top, and stale ones dropped (lazy deletion); a heap is rebuilt
when stale entries outnumber live ones. `choose_worker` is the scan the index replaces: the
definition of what the index must pick.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import TYPE_CHECKING, Any

from qsrv._resources import SCALE, display, fits

if TYPE_CHECKING:
    from qsrv.scheduler._records import Task
    from qsrv.scheduler._reservations import Reservation


ShapeKey = tuple[tuple[str, int], ...]
IdleKey = tuple[float, int]  # (load, worker id)
AheadKey = tuple[int, int, int]  # (tasks queued ahead, worker id, executor connection)


TENANT_MARK = "@tenant:"


def shape_key(need: dict[str, int], tenant: str = "") -> ShapeKey:
    """A shape's key: its sorted amounts, and for a tenant's tasks one more entry naming the
    tenant (resource names never start with '@')."""
    key = tuple(sorted(need.items()))
    return (*key, (TENANT_MARK + tenant, 0)) if tenant else key


class Shape:
    """One distinct target of one tenant, shared by all tasks that ask for it; holds their
    ready queue and its part of the placement index. A tenant's tasks (those of a scoped
    credential's clients) have shapes of their own: they run only on that tenant's executors,
    and no executor of a tenant ever runs another's tasks ("" is the cluster token's)."""

    __slots__ = ("ahead", "ahead_heap", "busy", "busy_heap", "counts", "feasible", "gpu",
                 "idle", "idle_heap", "indexed", "key", "need", "queue", "tenant", "warned")

    def __init__(self, need: dict[str, int], tenant: str = "") -> None:
        self.need = need
        self.tenant = tenant
        self.key: ShapeKey = shape_key(need, tenant)
        self.gpu = need.get("gpu", 0)
        self.queue: deque[Task] = deque()  # ready tasks, oldest first (may hold dead entries)
        self.feasible = False
        self.warned = False
        self.counts = [0, 0, 0, 0, 0]  # its tasks by TaskState (kept by _lifecycle.set_state)
        # Placement index (kept while `indexed`): workers where the shape fits now, with an
        # idle executor (worker id -> its key) and without one (worker ids); heaps over both.
        self.indexed = False
        self.idle: dict[int, IdleKey] = {}
        self.idle_heap: list[IdleKey] = []
        self.busy: set[int] = set()
        self.busy_heap: list[int] = []
        # Executors running a task of this shape that may take one more sent ahead
        # (connection -> its key), always kept; and their heap.
        self.ahead: dict[int, AheadKey] = {}
        self.ahead_heap: list[AheadKey] = []


class Executor:
    """An executor subprocess of a worker; runs one task at a time."""

    __slots__ = ("ahead_of", "conn", "fns", "idle_since", "pid", "queue", "reservation",
                 "scope", "short", "task", "tenant", "worker")

    def __init__(self, conn: int, worker: Worker, pid: int, tenant: str = "",
                 scope: set[int] | None = None) -> None:
        self.conn = conn
        self.worker = worker
        self.pid = pid
        self.tenant = tenant  # it runs only this tenant's tasks ("": the cluster token's)
        self.scope = scope  # its client's readable ids (a tenant's): what it is sent joins
        self.idle_since = 0.0  # a tenant's idle executor: when a tick first saw it idle
        # The reservation it is dedicated to (it runs only that one's tasks, and is idle in
        # that one's list, never its worker's); None: it serves its worker's shared capacity.
        self.reservation: Reservation | None = None
        self.task: Task | None = None  # the task it runs (holding the shape's capacity)
        # Tasks sent ahead, in the order the executor will run them; the running task's
        # capacity passes to the next. Cancelled ones stay as placeholders (results dropped).
        self.queue: deque[Task] = deque()
        self.fns: set[bytes] = set()  # functions this executor already has
        self.ahead_of: Shape | None = None  # the shape whose `ahead` lists it, if any
        # Its task's function was short when the task started here: tasks may wait behind it.
        self.short = False


class Worker:
    """A worker agent: its capacity, what is free, and its executors."""

    __slots__ = (
        "claims",
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
        "reservations",
        "spawning",
        "tenant_idle",
        "tenant_spawning",
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
        self.idle: list[Executor] = []  # idle executors of the cluster token's tasks
        self.tenant_idle: dict[str, list[Executor]] = {}  # ... and of each tenant's
        self.spawning = 0
        # Tenants it was asked an executor for: when (a tick's time; -1 until the next tick).
        self.tenant_spawning: dict[str, float] = {}
        self.last_seen = now
        # Reservations holding part of its capacity (by id); those waiting for an executor
        # to be dedicated to them, oldest first (an executor that registers goes to the first).
        self.reservations: dict[int, Reservation] = {}
        self.claims: list[Reservation] = []

    def idle_for(self, tenant: str) -> list[Executor]:
        """Its idle executors for ``tenant``'s tasks (not a reservation's)."""
        if not tenant:
            return self.idle
        idle = self.tenant_idle.get(tenant)
        if idle is None:
            idle = self.tenant_idle[tenant] = []
        return idle

    def has_idle(self, tenant: str) -> bool:
        return bool(self.idle if not tenant else self.tenant_idle.get(tenant))

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
        free = self.free
        for key, amount in shape.need.items():  # fits(), without a generator: a hot path
            if free.get(key, 0) < amount:
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
        if w.has_idle(shape.tenant):
            if w.id == prefer:
                return w, None
            load = w.load()
            if load < best_load:
                best, best_load = w, load
        elif needs_executor is None:
            needs_executor = w
    return best, needs_executor


class PlacementIndex:
    """What `choose_worker` would pick, kept up to date instead of scanned for (see the module
    docstring). Indexes are kept for the shapes in use: at most `max_shapes` of them, the least
    recently used shape without queued tasks giving way (it is indexed again, with one walk
    over the workers, when next used)."""

    def __init__(self, workers: dict[int, Worker], executors: dict[int, Executor], *,
                 prefetch: int, max_shapes: int = 32) -> None:
        self._workers = workers  # shared with the scheduler: registered workers by id
        self._executors = executors  # shared with the dispatcher: by connection
        self.prefetch = prefetch
        self.max_shapes = max_shapes
        self.shapes: dict[ShapeKey, Shape] = {}  # indexed shapes, least recently used first
        self.known: set[int] = set()  # ids of the workers the indexes were told about

    # ---- choosing ------------------------------------------------------------------------
    def choose(self, shape: Shape, prefer: int = 0,
               active: dict[ShapeKey, Shape] | None = None) -> tuple[Worker | None, Worker | None]:
        """What `choose_worker(shape, workers in id order, prefer)` picks, in O(log workers):
        the worker to run on, or else (None, a worker that has room but needs an executor)."""
        key = shape.key
        shapes = self.shapes
        if shape.indexed:
            if next(reversed(shapes)) != key:
                shapes[key] = shapes.pop(key)  # most recently used last
        else:
            self._index(shape, active)
        workers = self._workers
        idle = shape.idle
        if prefer and prefer in idle:
            return workers[prefer], None
        heap = shape.idle_heap
        while heap:
            top = heap[0]
            if idle.get(top[1]) == top:
                return workers[top[1]], None
            heapq.heappop(heap)
        busy, busy_heap = shape.busy, shape.busy_heap
        while busy_heap:
            wid = busy_heap[0]
            if wid in busy:
                return None, workers[wid]
            heapq.heappop(busy_heap)
        return None, None

    def choose_ahead(self, shape: Shape) -> Executor | None:
        """The executor running a short task of ``shape`` (not blocked) with the fewest tasks
        sent ahead, fewer than `prefetch`; ties go to the lowest worker id, then connection."""
        ahead, heap = shape.ahead, shape.ahead_heap
        while heap:
            top = heap[0]
            if ahead.get(top[2]) == top:
                return self._executors[top[2]]
            heapq.heappop(heap)
        return None

    # ---- keeping it up to date -------------------------------------------------------------
    def update(self, w: Worker) -> None:
        """``w``'s free amounts or idle executors changed."""
        if self._workers.get(w.id) is not w:
            return  # being removed: `sync` forgets it
        has_idle = bool(w.idle)
        load = w.load()
        for shape in self.shapes.values():
            _place(shape, w, w.fits_now(shape),
                   w.has_idle(shape.tenant) if shape.tenant else has_idle, load)

    def ahead(self, ex: Executor) -> None:
        """``ex``'s running task, its blocked flag or the tasks queued on it changed."""
        task = ex.task
        old = ex.ahead_of
        if (task is not None and ex.short and not task.blocked
                and len(ex.queue) < self.prefetch and self._executors.get(ex.conn) is ex):
            shape = task.shape
            if old is not None and old is not shape:
                old.ahead.pop(ex.conn, None)
            key = (len(ex.queue), ex.worker.id, ex.conn)
            if shape.ahead.get(ex.conn) != key:
                shape.ahead[ex.conn] = key
                _push(shape.ahead_heap, key, len(shape.ahead), shape.ahead.values())
            ex.ahead_of = shape
        elif old is not None:
            old.ahead.pop(ex.conn, None)
            ex.ahead_of = None

    def sync(self) -> None:
        """Workers came or went: index the new ones, forget the gone ones."""
        workers = self._workers
        gone = [wid for wid in self.known if workers.get(wid) is None]
        for wid in gone:
            self.known.discard(wid)
            for shape in self.shapes.values():
                shape.idle.pop(wid, None)
                shape.busy.discard(wid)
        for wid, w in workers.items():
            if wid not in self.known:
                self.known.add(wid)
                self.update(w)

    def _index(self, shape: Shape, active: dict[ShapeKey, Shape] | None) -> None:
        """Start indexing ``shape``: one walk over the workers."""
        shapes = self.shapes
        if len(shapes) >= self.max_shapes:
            for key, old in list(shapes.items()):
                if active is None or key not in active:
                    _forget(old)
                    del shapes[key]
                    if len(shapes) < self.max_shapes:
                        break
        shape.indexed = True
        shapes[shape.key] = shape
        for w in self._workers.values():
            _place(shape, w, w.fits_now(shape), w.has_idle(shape.tenant), w.load())


def _place(shape: Shape, w: Worker, fit: bool, has_idle: bool, load: float) -> None:
    wid = w.id
    idle = shape.idle
    if fit and has_idle:
        key = (load, wid)
        if idle.get(wid) != key:
            idle[wid] = key
            _push(shape.idle_heap, key, len(idle), idle.values())
        shape.busy.discard(wid)
        return
    idle.pop(wid, None)
    busy = shape.busy
    if fit:
        if wid not in busy:
            busy.add(wid)
            _push(shape.busy_heap, wid, len(busy), busy)
    else:
        busy.discard(wid)


def _push(heap: list[Any], entry: Any, live: int, entries: Any) -> None:
    """Push onto a lazily cleaned heap; rebuild it from the live entries once stale ones
    outnumber them."""
    if len(heap) > 2 * live + 32:
        heap[:] = entries
        heapq.heapify(heap)
    else:
        heapq.heappush(heap, entry)


def _forget(shape: Shape) -> None:
    shape.indexed = False
    shape.idle.clear()
    shape.idle_heap.clear()
    shape.busy.clear()
    shape.busy_heap.clear()


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
