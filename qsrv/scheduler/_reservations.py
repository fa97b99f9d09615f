"""Reservations: capacity held on one worker for one holder, and the tasks that run inside it.
Pure; changes only through `SchedulerState.handle`.

A reservation's lifecycle::

    pending ----- placed: a worker has room now ------> ready
      ^  |                                                 |
      |  +-- no connected worker could ever hold it --> infeasible   (pending again when one
      |                                                               that could joins)
      +------------- its worker is gone ----------------------+

    pending, ready, infeasible --> released   (release(); its holder disconnected; not ready
                                               within its timeout) -- final: forgotten

Rules (checked by `validate_state()`):

- A ready reservation holds its whole target on its `worker` (amounts and GPU devices), as a
  running task would: nothing else is placed on that capacity, and the worker's free amounts
  are its totals less its tasks' and its reservations' shares.
- Tasks submitted to it (`SubmitReserved`) wait in its own `queue` and run only on executors
  dedicated to it (`executors`; `idle` those without a task), out of its capacity (`free`: its
  target less what its running tasks hold). No task is sent ahead to them.
- Executors are dedicated when it needs one: an idle executor of its worker's shared pool, else
  one the worker is asked to start (the reservation waits in the worker's `claims`; the next
  executor that registers there is its). They stay with it (warm: imports and module caches
  kept between its tasks) until it is released, then they are stopped.
- A task submitted to an infeasible or released reservation, or one whose target does not fit
  in the reservation's, fails with a "reservation" error carrying the reason; so do the tasks
  waiting in a reservation when it is released or turns infeasible. Tasks running in it when
  its worker dies are retried as usual (back into its queue); the reservation goes back to
  pending and is placed again.
- Only clients of the holder's tenant may submit into it (a scoped credential's tenant; "" for
  the cluster token's holders); to the others it does not exist.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from qsrv._resources import display, fits
from qsrv.protocol import (
    SYSTEM_ERROR,
    Notice,
    ReservationUpdate,
    Reserve,
    SpawnExecutor,
    SpawnTenantExecutor,
    encode_system_error,
)
from qsrv.scheduler._directory import Directory
from qsrv.scheduler._dispatch import Dispatcher
from qsrv.scheduler._events import Action, Log, Send
from qsrv.scheduler._lifecycle import READY, RUNNING
from qsrv.scheduler._placement import Executor, Shape, Worker, infeasible_reason
from qsrv.scheduler._records import Client, Task

PENDING: Final = "pending"
RESERVED: Final = "ready"
INFEASIBLE: Final = "infeasible"
RELEASED: Final = "released"
_REMEMBERED = 4096  # released reservations whose reason is kept (for tasks submitted late)


class Reservation:
    """Capacity held on one worker (while ready) for the tasks submitted into it."""

    __slots__ = ("deadline", "executors", "free", "gpu_ids", "id", "idle", "name", "owner",
                 "queue", "reason", "shape", "spawning", "status", "tenant", "timeout",
                 "worker")

    def __init__(self, rid: int, owner: int, tenant: str, name: str, need: dict[str, int],
                 timeout: float) -> None:
        self.id = rid
        self.owner = owner  # the holder's connection
        self.tenant = tenant
        self.name = name
        self.shape = Shape(dict(need))  # its target (not one of the dispatcher's shapes)
        self.timeout = timeout  # seconds to become ready; 0: none
        self.deadline = 0.0
        self.status: str = PENDING
        self.reason = ""
        self.worker: Worker | None = None  # while ready
        self.gpu_ids: list[str] | None = None  # the devices it holds while ready
        self.free: dict[str, int] = {}  # while ready: its target less its running tasks'
        self.executors: dict[int, Executor] = {}  # dedicated to it, by connection
        self.idle: list[Executor] = []
        self.queue: deque[Task] = deque()  # its READY tasks, oldest first (may hold dead ones)
        # An executor was asked for on its worker and has not come yet: when (a tick's time;
        # -1 until the next tick); 0: none asked.
        self.spawning = 0.0

    @property
    def need(self) -> dict[str, int]:
        return self.shape.need

    def refusal(self) -> str | None:
        """Why a task cannot run in it now (None: it can, now or once it is placed)."""
        if self.status == RELEASED:
            return f"{self.label()} was released: {self.reason}"
        if self.status == INFEASIBLE:
            return f"{self.label()} is infeasible: {self.reason}"
        return None

    def label(self) -> str:
        return f"reservation {self.id:016x}" + (f" ({self.name!r})" if self.name else "")


class Reservations:
    def __init__(self, out: list[Action], clients: dict[int, Client],
                 workers: dict[int, Worker], directory: Directory,
                 dispatcher: Dispatcher) -> None:
        self.live: dict[int, Reservation] = {}  # by id: pending, ready or infeasible
        self.waiting: dict[int, Reservation] = {}  # pending or infeasible: to be placed
        self.released: dict[int, str] = {}  # id -> why, the last _REMEMBERED of them
        self.now = 0.0
        self._out = out
        self._clients = clients
        self._workers = workers
        self._directory = directory
        self._dispatcher = dispatcher
        dispatcher.reservations = self.live
        dispatcher.reservations_waiting = self.waiting
        dispatcher.place_reservations = self.place
        dispatcher.reserved_executor = self.need_executor
        dispatcher.claim_executor = self.claim
        dispatcher.reservations_changed = self.refresh

    # ---- holders' requests -----------------------------------------------------------------
    def reserve(self, client: Client, msg: Reserve) -> Reservation:
        """A new reservation, placed now if a worker has room. The caller checked the id's
        namespace and the amounts."""
        res = Reservation(msg.res_id, client.conn, client.tenant, msg.name[:200],
                          msg.resources, msg.timeout if msg.timeout > 0 else 0.0)
        self.live[res.id] = res
        self.waiting[res.id] = res
        if res.timeout:
            res.deadline = self.now + res.timeout
        self._out.append(Log("info", f"{res.label()} of {display(res.need)} asked by "
                                     f"connection {client.conn}"))
        if not self._feasible(res):
            self._infeasible(res)
        return res

    def release(self, res: Reservation, reason: str) -> None:
        """Final: its tasks fail, its executors stop, its capacity returns to its worker."""
        rid = res.id
        self.live.pop(rid, None)
        self.waiting.pop(rid, None)
        self._dispatcher.reserved_active.pop(rid, None)
        self.released[rid] = reason
        if len(self.released) > _REMEMBERED:
            del self.released[next(iter(self.released))]
        res.status, res.reason = RELEASED, reason
        self._fail_queued(res, f"{res.label()} was released: {reason}")
        worker = res.worker
        for ex in list(res.executors.values()):
            task = ex.task
            if task is not None and task.state == RUNNING:
                self._directory.finish(task, SYSTEM_ERROR, encode_system_error(
                    "reservation", f"task {task.name!r} stopped: {res.label()} was released: "
                                   f"{reason}"), (), [])
            self._dispatcher.retire(ex, f"{res.label()} released", replace=True)
        if worker is not None:
            worker.release(res.need, res.gpu_ids)
            worker.reservations.pop(rid, None)
            if res in worker.claims:
                worker.claims.remove(res)
            self._dispatcher.index.update(worker)
        res.worker = res.gpu_ids = None
        self._update(res)
        self._out.append(Log("info", f"{res.label()} released: {reason}"))

    def release_by(self, client: Client, rid: int) -> None:
        res = self.live.get(rid)
        if res is not None and res.owner == client.conn:
            self.release(res, "released by its holder")

    def holder_gone(self, conn: int) -> None:
        for res in [r for r in self.live.values() if r.owner == conn]:
            self.release(res, "holder disconnected")

    def admit(self, client: Client, task: Task, rid: int) -> str | None:
        """Attach ``task`` to reservation ``rid``; why it cannot run there (None: it can)."""
        res = self.live.get(rid)
        if res is None or res.tenant != client.tenant:
            why = self.released.get(rid) if res is None else None
            return (f"reservation {rid:016x} was released: {why}" if why is not None
                    else f"reservation {rid:016x} does not exist")
        if res.status == INFEASIBLE:
            return f"{res.label()} is infeasible: {res.reason}"
        if not fits(task.shape.need, res.need):
            return (f"task {task.name!r}: target {display(task.shape.need)} does not fit in "
                    f"{res.label()} of {display(res.need)}")
        task.reservation = res
        return None

    # ---- placement ---------------------------------------------------------------------------
    def place(self) -> None:
        """Place the pending reservations that a worker has room for now (the least loaded
        one), oldest first. Called by the dispatcher before it places tasks."""
        for res in list(self.waiting.values()):
            if res.status != PENDING:
                continue
            shape = res.shape
            best: Worker | None = None
            for w in self._workers.values():
                if w.fits_now(shape) and (best is None or w.load() < best.load()):
                    best = w
            if best is None:
                continue
            gpu_ids = best.pick_gpus(shape.gpu) if shape.gpu else None
            best.acquire(res.need, gpu_ids)
            best.reservations[res.id] = res
            res.worker, res.gpu_ids = best, gpu_ids
            res.free = dict(res.need)
            res.status, res.reason = RESERVED, ""
            del self.waiting[res.id]
            self._dispatcher.index.update(best)
            if res.queue:
                self._dispatcher.reserved_active[res.id] = res
            self._update(res)
            self._out.append(Log("info", f"{res.label()} is ready on worker {best.id} "
                                         f"({best.name})"))

    def refresh(self) -> None:
        """Workers came or went: which waiting reservations could ever be placed."""
        for res in list(self.waiting.values()):
            feasible = self._feasible(res)
            if res.status == INFEASIBLE and feasible:
                res.status, res.reason = PENDING, ""
                self._update(res)
            elif res.status == PENDING and not feasible:
                self._infeasible(res)

    def worker_lost(self, worker: Worker, reason: str) -> None:
        """``worker`` was removed (its executors already gone, their tasks retried into the
        queues): its reservations wait to be placed again."""
        for res in list(worker.reservations.values()):
            res.worker = res.gpu_ids = None
            res.free = {}
            res.idle.clear()
            res.executors.clear()
            res.spawning = 0.0
            res.status, res.reason = PENDING, f"its worker {worker.id} ({worker.name}) was " \
                                              f"removed: {reason}"
            self.waiting[res.id] = res
            self._update(res)
        worker.reservations.clear()
        worker.claims.clear()

    def need_executor(self, res: Reservation) -> bool:
        """Dedicate an executor to ``res``: an idle one of its worker's shared pool (True: it
        has one now), else ask its worker for one (False)."""
        worker = res.worker
        if worker is None:
            return False
        idle = worker.idle_for(res.tenant)
        if idle:
            ex = idle.pop()
            ex.idle_since = 0.0
            self._dispatcher.index.update(worker)
            self.dedicate(ex, res)
            return True
        if not res.spawning:
            res.spawning = -1.0
            worker.claims.append(res)
            self._out.append(Send(worker.conn, SpawnTenantExecutor(1, res.tenant) if res.tenant
                                  else SpawnExecutor(1)))
        return False

    def claim(self, ex: Executor) -> bool:
        """A new executor on a worker where a reservation waits for one: it is dedicated to
        the oldest such reservation (True)."""
        claims = ex.worker.claims
        for i, res in enumerate(claims):
            if res.tenant == ex.tenant:
                del claims[i]
                res.spawning = 0.0
                self.dedicate(ex, res)
                return True
        return False

    def dedicate(self, ex: Executor, res: Reservation) -> None:
        ex.reservation = res
        ex.short = False  # nothing is sent ahead to it
        res.executors[ex.conn] = ex
        res.idle.append(ex)
        if res.queue:
            self._dispatcher.reserved_active[res.id] = res

    # ---- time --------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Reservations not ready by their deadline are released."""
        self.now = now
        for res in [r for r in self.waiting.values() if r.deadline and r.deadline <= now]:
            why = (res.reason if res.status == INFEASIBLE
                   else "no worker had room for it" if not res.reason else res.reason)
            self.release(res, f"not ready within its timeout of {res.timeout:g} s: {why}")

    # ---- status ------------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        out = []
        for res in self.live.values():
            worker = res.worker
            running = sum(1 for ex in res.executors.values() if ex.task is not None)
            queued = sum(1 for t in res.queue if t.state == READY)
            out.append({
                "id": f"{res.id:016x}", "name": res.name, "target": display(res.need),
                "worker": worker.name if worker is not None else None,
                "worker_id": worker.id if worker is not None else None,
                "status": res.status, "reason": res.reason or None,
                "holder": res.owner, "tenant": res.tenant, "tasks": running + queued,
                "running": running, "executors": len(res.executors),
            })
        return out

    # ---- helpers -----------------------------------------------------------------------------
    def _feasible(self, res: Reservation) -> bool:
        return any(w.could_ever_fit(res.shape) for w in self._workers.values())

    def _infeasible(self, res: Reservation) -> None:
        res.status = INFEASIBLE
        res.reason = infeasible_reason(res.shape, list(self._workers.values())).replace(
            "target", "reservation of", 1)
        text = f"{res.label()} is infeasible: {res.reason}"
        self._out.append(Log("warning", text))
        if res.owner in self._clients:
            self._out.append(Send(res.owner, Notice("warning", text)))
        self._fail_queued(res, text)
        self._update(res)

    def _fail_queued(self, res: Reservation, message: str) -> None:
        self._dispatcher.reserved_active.pop(res.id, None)
        queue, res.queue = res.queue, deque()
        for task in queue:
            if task.state == READY:
                self._directory.finish(task, SYSTEM_ERROR, encode_system_error(
                    "reservation", f"task {task.name!r} cannot run: {message}"), (), [])

    def _update(self, res: Reservation) -> None:
        if res.owner in self._clients:
            worker = res.worker.name if res.worker is not None else ""
            self._out.append(Send(res.owner, ReservationUpdate(res.id, res.status, worker,
                                                               res.reason)))

