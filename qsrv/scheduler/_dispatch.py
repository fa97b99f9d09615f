"""Dispatch: ready tasks wait in the queue of their shape (their distinct target) and go to
executors. Pure; changes only through `SchedulerState.handle`.

- A task holds its shape's resources on its worker exactly while it is RUNNING and not blocked
  (a blocked task keeps only its GPU devices).
- An executor runs its `task`, then its `queue` in order: tasks sent ahead, only short ones of
  the same shape behind a short one (`short`: its function's measured run time was under
  `prefetch_below` when it started), about AHEAD_BUDGET seconds of that time at most. The
  running task's capacity passes to the next, and is released when the queue is empty. The
  scheduler's view of that order is the executor's own.
- An executor is `idle` exactly when it has no task.
- `active` lists the shapes whose queue is not empty. Queues may hold tasks that were
  cancelled or timed out meanwhile; they are skipped when popped.
- Placement prefers the node that holds most bytes of a task's stored arguments, then the
  least loaded (see _placement.py). Within one frame of messages (`batching`), it runs once.
- The placement index (`index`) is told of every change to a worker's free amounts or idle
  executors, and to an executor's running task or queue, where the change is made: choosing
  a worker or an executor to send ahead to walks no list of workers or executors.
- A task submitted into a reservation waits in the reservation's queue, not its shape's, and
  runs on an executor dedicated to the reservation, out of the reservation's capacity (see
  _reservations.py). Pending reservations are placed before tasks: capacity that frees goes
  to them first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from qsrv._resources import SCALE, fits
from qsrv.protocol import (
    SYSTEM_ERROR,
    FunctionDef,
    KillExecutor,
    Notice,
    ObjectValue,
    RetireExecutor,
    RunTask,
    SpawnExecutor,
    SpawnTenantExecutor,
    encode_system_error,
)
from qsrv.scheduler._directory import Directory
from qsrv.scheduler._events import Action, Close, Log, Send
from qsrv.scheduler._lifecycle import ASSIGNED, READY, RUNNING, set_state
from qsrv.scheduler._placement import (
    Executor,
    PlacementIndex,
    Shape,
    ShapeKey,
    Worker,
    infeasible_reason,
    shape_key,
)
from qsrv.scheduler._records import Obj, Task

if TYPE_CHECKING:
    from qsrv.scheduler._reservations import Reservation

TENANT_IDLE_S = 300.0  # an executor of a tenant idle this long is stopped (not replaced)
# An executor asked for a tenant or a reservation that has not come in this long (it failed to
# start): it may be asked for again.
SPAWN_WAIT_S = 30.0

# Tasks sent ahead to one executor hold at most about this much of their functions' measured
# run time (so a task waits behind at most this much work, on an executor it cannot leave).
AHEAD_BUDGET = 0.002


class Dispatcher:
    def __init__(self, out: list[Action], workers: dict[int, Worker], directory: Directory, *,
                 max_executors_per_cpu: int, prefetch: int, prefetch_below: float) -> None:
        self.shapes: dict[ShapeKey, Shape] = {}
        self.active: dict[ShapeKey, Shape] = {}  # shapes with queued tasks
        self.executors: dict[int, Executor] = {}  # by conn
        self.functions: dict[bytes, bytes] = {}  # function id -> payload, sent once per executor
        # Send tasks ahead to a busy executor when its function's tasks take under
        # `prefetch_below` seconds: no scheduler round trip between short tasks. As many as
        # make AHEAD_BUDGET seconds of its measured run time, at least one, at most `prefetch`.
        self.prefetch = prefetch
        self.prefetch_below = prefetch_below
        self.max_executors_per_cpu = max_executors_per_cpu
        self.fn_time: dict[bytes, float] = {}  # recent run time per function (moving average)
        self.batching = False  # set while a frame of messages is handled: dispatch once after
        self.wanted = False  # dispatch was asked for while batching
        self._out = out
        self._workers = workers
        self._directory = directory
        self.index = PlacementIndex(workers, self.executors, prefetch=prefetch)
        # Reservations (kept by _reservations.Reservations, which sets these): the live ones,
        # the ready ones with queued tasks, and its hooks.
        self.reservations: dict[int, Reservation] = {}
        self.reserved_active: dict[int, Reservation] = {}
        self.reservations_waiting: dict[int, Reservation] = {}
        self.place_reservations: Callable[[], None] = _nothing
        self.reserved_executor: Callable[[Reservation], bool] = _never
        self.claim_executor: Callable[[Executor], bool] = _never_ex
        self.reservations_changed: Callable[[], None] = _nothing

    # ---- queues --------------------------------------------------------------------------
    def shape_of(self, resources: dict[str, int], tenant: str = "") -> Shape:
        key = shape_key(resources, tenant) if tenant else tuple(sorted(resources.items()))
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = Shape(dict(resources), tenant)
            shape.feasible = any(w.could_ever_fit(shape) for w in self._workers.values())
        return shape

    def enqueue(self, task: Task) -> None:
        """The task is READY: it waits in its shape's queue (a warning if nothing can run it),
        or in its reservation's."""
        set_state(task, READY)
        res = task.reservation
        if res is not None:
            refused = res.refusal()
            if refused is not None:  # released or infeasible while the task waited
                self._directory.finish(task, SYSTEM_ERROR, encode_system_error(
                    "reservation", f"task {task.name!r} cannot run: {refused}"), (), [])
                return
            res.queue.append(task)
            self.reserved_active[res.id] = res
            return
        shape = task.shape
        shape.queue.append(task)
        self.active[shape.key] = shape
        if not shape.feasible and not shape.warned:
            shape.warned = True
            text = (f"task {task.name!r} is pending: "
                    f"{infeasible_reason(shape, list(self._workers.values()))}")
            self._out.append(Log("warning", text))
            self._out.append(Send(task.owner, Notice("warning", text)))

    def requeue_front(self, tasks: list[Task]) -> None:
        """Tasks given back unstarted go to the front of their queues, order kept."""
        for task in reversed(tasks):
            task.executor = None
            if task.state == ASSIGNED:  # never one of a reservation: none is sent ahead
                set_state(task, READY)
                task.shape.queue.appendleft(task)
                self.active[task.shape.key] = task.shape

    def refresh_feasibility(self) -> None:
        """After workers came or went: which shapes could ever run; the index learns of
        them."""
        self.index.sync()
        workers = list(self._workers.values())
        for shape in self.shapes.values():
            shape.feasible = any(w.could_ever_fit(shape) for w in workers)
            if shape.feasible:
                shape.warned = False
        if self.reservations:
            self.reservations_changed()

    # ---- placement -----------------------------------------------------------------------
    def dispatch(self) -> None:
        """Start what can start now."""
        if self.batching:  # once, after the whole batch
            self.wanted = True
            return
        self.wanted = False
        if self.reservations:
            if self.reservations_waiting:
                self.place_reservations()
            if self.reserved_active:
                self._dispatch_reserved()
        active = self.active
        if not active:
            return
        choose = self.index.choose
        holder_of_args = self._directory.holder_of_args
        for key, shape in list(active.items()):
            queue = shape.queue
            while queue:
                task = queue[0]
                if task.state != READY:
                    queue.popleft()
                    continue
                if not shape.feasible:
                    break
                worker, short = choose(shape, holder_of_args(task), active)
                if worker is None:
                    if short is not None:
                        self._need_executor(short, shape.tenant)
                    if not self._send_ahead(task):
                        break
                    continue
                queue.popleft()
                self._run(task, worker)
            if not queue:
                del active[key]

    def _dispatch_reserved(self) -> None:
        """Start the queued tasks of ready reservations that their free capacity holds."""
        for rid, res in list(self.reserved_active.items()):
            queue = res.queue
            while queue:
                task = queue[0]
                if task.state != READY:
                    queue.popleft()
                    continue
                if res.worker is None or not fits(task.shape.need, res.free):
                    break
                if not res.idle and not self.reserved_executor(res):
                    break
                queue.popleft()
                self._run_reserved(task, res)
            if not queue:
                self.reserved_active.pop(rid, None)

    def _run_reserved(self, task: Task, res: Reservation) -> None:
        ex = res.idle.pop()
        need = task.shape.need
        free = res.free
        for key, amount in need.items():
            free[key] = free.get(key, 0) - amount
        gpu = task.shape.gpu
        gpu_ids = res.gpu_ids[: max(1, gpu // SCALE)] if gpu and res.gpu_ids else None
        set_state(task, RUNNING)
        task.executor, task.gpu_ids = ex, gpu_ids
        ex.task = task
        self._send_task(ex, task, gpu_ids)

    def _need_executor(self, worker: Worker, tenant: str = "") -> None:
        """Ask for one more executor (of ``tenant``'s tasks) on a worker with free capacity but
        none idle. At the cap, an idle executor of another tenant makes room (it is stopped);
        past the cap only when every executor waits in `get` on other tasks: nothing there can
        make progress then, and one more executor is the only way out of a nested deadlock."""
        if worker.spawning if not tenant else tenant in worker.tenant_spawning:
            return
        cap = max(1, worker.total.get("cpu", 0) // SCALE) * self.max_executors_per_cpu + 8
        if len(worker.executors) >= cap and not all(
                ex.task is not None and ex.task.blocked for ex in worker.executors.values()):
            victim = self._idle_of_another(worker, tenant)
            if victim is None:
                return
            self.retire(victim, f"room for an executor of {tenant or 'the cluster'}'s tasks",
                        replace=False)
        self.spawn(worker, tenant)

    def spawn(self, worker: Worker, tenant: str) -> None:
        """Ask ``worker`` for an executor of ``tenant``'s tasks."""
        if tenant:
            worker.tenant_spawning[tenant] = -1.0
            self._out.append(Send(worker.conn, SpawnTenantExecutor(1, tenant)))
        else:
            worker.spawning = 1
            self._out.append(Send(worker.conn, SpawnExecutor(1)))

    @staticmethod
    def _idle_of_another(worker: Worker, tenant: str) -> Executor | None:
        for other, idle in worker.tenant_idle.items():
            if other != tenant and idle:
                return idle[0]
        return worker.idle[0] if tenant and worker.idle else None

    def retire(self, ex: Executor, why: str, *, replace: bool) -> None:
        """Stop an executor (idle, or dedicated to a reservation being released); its agent
        starts another in its place when ``replace`` (a shared executor's pool stays)."""
        self._out.append(Send(ex.worker.conn, KillExecutor(ex.pid, why) if replace
                              else RetireExecutor(ex.pid, why)))
        self._out.append(Close(ex.conn, why))
        self.drop_executor(ex)

    def tick(self, now: float, idle_s: float = TENANT_IDLE_S) -> None:
        """Stop the executors of tenants idle for ``idle_s`` seconds (seen idle at a tick
        first, then again that long after); forget the executors asked for a tenant or a
        reservation that did not come within SPAWN_WAIT_S (they may be asked for again)."""
        asked_again = False
        for worker in list(self._workers.values()):
            for tenant, since in list(worker.tenant_spawning.items()):
                if since < 0:
                    worker.tenant_spawning[tenant] = now
                elif now - since >= SPAWN_WAIT_S:
                    del worker.tenant_spawning[tenant]
                    asked_again = True
            for res in list(worker.claims):
                if res.spawning < 0:
                    res.spawning = now
                elif now - res.spawning >= SPAWN_WAIT_S:
                    worker.claims.remove(res)
                    res.spawning = 0.0
                    asked_again = True
            tenant_idle = worker.tenant_idle
            if not tenant_idle:
                continue
            for tenant, idle in list(tenant_idle.items()):
                for ex in list(idle):
                    if not ex.idle_since:
                        ex.idle_since = now
                    elif now - ex.idle_since >= idle_s:
                        self.retire(ex, f"idle for {idle_s:g} s", replace=False)
                if not idle:
                    del tenant_idle[tenant]
        if asked_again:
            self._out.append(Log("warning", "an executor asked for did not register within "
                                            f"{SPAWN_WAIT_S:g} s; asking again"))

    def _send_ahead(self, task: Task) -> bool:
        """Queue a short task behind a running one of the same shape (on the executor with
        the fewest queued); False if none can take it."""
        took = self.fn_time.get(task.fn_id, 1e9)
        if not self.prefetch or took >= self.prefetch_below:
            return False
        best = self.index.choose_ahead(task.shape)
        if best is None or best.task is None:
            return False
        if len(best.queue) >= min(self.prefetch, max(1, round(AHEAD_BUDGET / max(took, 1e-9)))):
            return False  # the shortest queue holds enough of this function's work already
        task.shape.queue.popleft()
        set_state(task, ASSIGNED)
        task.executor = best
        best.queue.append(task)
        self.index.ahead(best)
        self._send_task(best, task, best.task.gpu_ids)
        return True

    def _run(self, task: Task, worker: Worker) -> None:
        ex = worker.idle_for(task.shape.tenant).pop()
        ex.idle_since = 0.0
        gpu_ids = worker.pick_gpus(task.shape.gpu) if task.shape.gpu else None
        worker.acquire(task.shape.need, gpu_ids)
        set_state(task, RUNNING)
        task.executor, task.gpu_ids = ex, gpu_ids
        ex.task = task
        ex.short = self.fn_time.get(task.fn_id, 1e9) < self.prefetch_below
        index = self.index
        index.update(worker)
        index.ahead(ex)
        self._send_task(ex, task, gpu_ids)

    def _send_task(self, ex: Executor, task: Task, gpu_ids: list[str] | None) -> None:
        """The function (once per executor), the values of the arguments, then the task."""
        out = self._out
        conn = ex.conn
        if task.fn_id not in ex.fns:
            ex.fns.add(task.fn_id)
            out.append(Send(conn, FunctionDef(task.fn_id, self.functions[task.fn_id])))
        objects = self._directory.objects
        scope = ex.scope  # a tenant's executor may name what it is sent, and no more
        if scope is not None:
            scope.update(task.deps)
        for dep in task.deps:
            obj = objects.get(dep)
            if type(obj) is Obj:
                out.append(Send(conn, ObjectValue(dep, obj.status, obj.data, obj.bufs, obj.refs)))
                if scope is not None and obj.refs:
                    scope.update(obj.refs)
        out.append(Send(conn, RunTask(task.id, task.fn_id, task.args, task.bufs, task.deps,
                                      gpu_ids or [], task.shape.need, task.retry_exc)))

    # ---- executors -----------------------------------------------------------------------
    def add_executor(self, conn: int, worker: Worker, pid: int, tenant: str = "",
                     scope: set[int] | None = None) -> None:
        ex = Executor(conn, worker, pid, tenant, scope)
        self.executors[conn] = ex
        worker.executors[conn] = ex
        if worker.claims and self.claim_executor(ex):
            return  # dedicated to a reservation that waited for one
        if tenant:
            worker.tenant_spawning.pop(tenant, None)
        else:
            worker.spawning = max(0, worker.spawning - 1)
        worker.idle_for(tenant).append(ex)
        self.index.update(worker)

    def done_on(self, ex: Executor, task: Task, elapsed: float) -> None:
        """The executor finished ``task`` (its current one): it goes on with the next task it
        holds, on the same capacity, or becomes idle."""
        old = self.fn_time.get(task.fn_id)
        self.fn_time[task.fn_id] = elapsed if old is None else 0.8 * old + 0.2 * elapsed
        if ex.queue:
            nxt = ex.queue.popleft()
            ex.task, nxt.gpu_ids = nxt, task.gpu_ids
            ex.short = self.fn_time.get(nxt.fn_id, 1e9) < self.prefetch_below
            if nxt.state == ASSIGNED:  # else a placeholder: cancelled or timed out meanwhile
                set_state(nxt, RUNNING)
            task.executor = None
            self.index.ahead(ex)
        else:
            res = ex.reservation
            (ex.worker.idle_for(ex.tenant) if res is None else res.idle).append(ex)
            self.free_executor(ex, task)

    def free_executor(self, ex: Executor, task: Task) -> None:
        """The executor no longer runs ``task``: its worker gets the capacity back."""
        need = task.shape.need
        if task.blocked:
            need = {"gpu": need["gpu"]} if "gpu" in need else {}
            task.blocked = False
        ex.task = None
        task.executor = None
        res = ex.reservation
        if res is not None:  # back into the reservation's capacity (its devices stay its)
            free = res.free
            for key, amount in need.items():
                free[key] = free.get(key, 0) + amount
            if res.queue:
                self.reserved_active[res.id] = res
            return
        ex.worker.release(need, task.gpu_ids)
        self.index.update(ex.worker)
        self.index.ahead(ex)

    def give_back(self, ex: Executor, task_ids: list[int]) -> None:
        """The executor returns tasks sent ahead that it has not started."""
        returned = set(task_ids)
        back = [t for t in ex.queue if t.id in returned]
        ex.queue = deque(t for t in ex.queue if t.id not in returned)
        self.index.ahead(ex)
        self.requeue_front(back)

    def drop_executor(self, ex: Executor) -> Task | None:
        """Forget an executor that is gone. What it held ahead goes back to the queues (no
        retry used); its capacity returns. Returns the task it was running, if RUNNING."""
        self.executors.pop(ex.conn, None)
        worker = ex.worker
        worker.executors.pop(ex.conn, None)
        self.index.ahead(ex)  # no longer an executor: off the index
        res = ex.reservation
        if res is not None:
            res.executors.pop(ex.conn, None)
            if ex in res.idle:
                res.idle.remove(ex)
        else:
            idle = worker.idle_for(ex.tenant)
            if ex in idle:
                idle.remove(ex)
        self.requeue_front(list(ex.queue))
        ex.queue.clear()
        task = ex.task
        if task is None:
            self.index.update(worker)
            return None
        self.free_executor(ex, task)
        return task if task.state == RUNNING else None

    def block(self, ex: Executor, task: Task) -> bool:
        """A task waiting on others lends its share meanwhile (not its GPUs); False if it
        already did."""
        if task.blocked:
            return False
        task.blocked = True
        lent = {k: v for k, v in task.shape.need.items() if k != "gpu"}
        res = ex.reservation
        if res is not None:
            for key, amount in lent.items():
                res.free[key] = res.free.get(key, 0) + amount
            if res.queue:
                self.reserved_active[res.id] = res
            return True
        ex.worker.release(lent, None)
        self.index.update(ex.worker)
        self.index.ahead(ex)
        return True

    def unblock(self, ex: Executor, task: Task) -> None:
        if task.blocked:
            task.blocked = False
            lent = {k: v for k, v in task.shape.need.items() if k != "gpu"}
            res = ex.reservation
            if res is not None:
                for key, amount in lent.items():
                    res.free[key] = res.free.get(key, 0) - amount
                return
            ex.worker.acquire(lent, None)
            self.index.update(ex.worker)
            self.index.ahead(ex)


def _nothing() -> None:
    return None


def _never(res: Reservation) -> bool:
    return False


def _never_ex(ex: Executor) -> bool:
    return False
