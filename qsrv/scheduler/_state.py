"""The scheduler's decisions: a pure state machine. Events in, actions out; no IO, no clock.

`SchedulerState.handle(event)` is the only way state changes. Events (see _events.py):
Connected, Received, ReceivedBatch, Disconnected, Tick. Actions: Send, Close, Log. The IO layer
(_server.py) carries them.

Invariants:
- `objects[id]` is a `Task` while the value is being computed, an `Obj` once it exists, and
  absent once freed. `holders` counts: each client holding a ref (once per client), each task
  waiting to use it as an argument, and each object containing it. At zero an `Obj` is freed.
- A task holds its shape's resources on its worker exactly while it is RUNNING and not blocked.
- An executor runs its `task`, then its `queue` in order (tasks sent ahead, only short ones of
  the same shape): the running task's capacity passes to the next, and is released when the
  queue is empty. The scheduler's view of that order is the executor's own.
- Task payloads and values are opaque bytes: never unpickled here.
- Queues may hold tasks that were cancelled or timed out meanwhile; they are skipped when popped.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from qsrv._resources import SCALE, display
from qsrv.protocol import (
    OK,
    STORED,
    SYSTEM_ERROR,
    TASK_ERROR,
    Cancel,
    FreeObjects,
    FunctionDef,
    Heartbeat,
    HoldObjects,
    KillExecutor,
    Notice,
    ObjectsCopied,
    ObjectValue,
    PutObject,
    RefUpdate,
    RegisterExecutor,
    RegisterFunction,
    RegisterWorker,
    RunTask,
    SpawnExecutor,
    StatusReply,
    StatusRequest,
    SubmitTask,
    Subscribe,
    TaskBlocked,
    TaskDone,
    TaskReturned,
    TaskUnblocked,
    WorkerAccepted,
    WorkerInfo,
)
from qsrv.scheduler._events import (
    Close,
    Connected,
    Disconnected,
    Log,
    Received,
    ReceivedBatch,
    Send,
    Tick,
)
from qsrv.scheduler._placement import (
    Executor,
    Shape,
    Worker,
    choose_worker,
    infeasible_reason,
)
from qsrv.scheduler._records import (
    ASSIGNED,
    FINISHED,
    NO_DEPS,
    PENDING,
    READY,
    RUNNING,
    Client,
    Obj,
    ProtocolViolation,
    Task,
    stored_at,
    system_error,
)

ID_BITS = 40  # ids minted by a client: (client_no << ID_BITS) | n


class SchedulerState:
    def __init__(self, *, heartbeat_timeout: float = 5.0, max_executors_per_cpu: int = 4,
                 prefetch: int = 2, prefetch_below: float = 0.01) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        # Send up to `prefetch` tasks ahead to a busy executor when its function's tasks take
        # under `prefetch_below` seconds: no scheduler round trip between short tasks.
        self.prefetch = prefetch
        self.prefetch_below = prefetch_below
        self._fn_time: dict[bytes, float] = {}  # recent run time per function (moving average)
        self.max_executors_per_cpu = max_executors_per_cpu
        self.now = 0.0
        self.clients: dict[int, Client] = {}
        self.workers: dict[int, Worker] = {}  # by worker id
        self.worker_by_conn: dict[int, Worker] = {}
        self.executors: dict[int, Executor] = {}  # by conn
        self.objects: dict[int, Task | Obj] = {}
        self.functions: dict[bytes, bytes] = {}
        self._fn_keys: dict[bytes, bytes] = {}  # interned function ids
        self._names: dict[str, str] = {}  # interned task names
        self.shapes: dict[tuple[tuple[str, int], ...], Shape] = {}
        self.active: dict[tuple[tuple[str, int], ...], Shape] = {}  # shapes with queued tasks
        self.deadlines: list[tuple[float, int]] = []
        self._next_worker = 1
        self._out: list[Any] = []
        self._batching = False
        self._dispatch_wanted = False

    # ---- entry point -------------------------------------------------------------------------
    def handle(self, event: Any) -> list[Any]:
        """Apply one event; return the actions to carry out, in order."""
        if type(event) is Received:
            self._receive(event.conn, event.msg)
        elif type(event) is ReceivedBatch:
            self._batching = True
            try:
                for msg in event.msgs:
                    if not self._receive(event.conn, msg):
                        break  # the connection was closed: ignore the rest of its frame
            finally:
                self._batching = False
            if self._dispatch_wanted:
                self._dispatch()
        elif type(event) is Tick:
            self._tick(event.now)
        elif type(event) is Connected:
            self.clients[event.conn] = Client(event.conn, event.role, event.client_no)
        elif type(event) is Disconnected:
            self._disconnected(event.conn, event.reason)
        out, self._out = self._out, []
        return out

    def _receive(self, conn: int, msg: Any) -> bool:
        """Handle one message; False if it broke the rules (the connection is being closed)."""
        handler = self._handlers.get(type(msg))
        if handler is None:
            self._violation(conn, f"{type(msg).__name__} is not accepted here")
            return False
        try:
            handler(self, conn, msg)
        except ProtocolViolation as exc:
            self._violation(conn, str(exc))
            return False
        return True

    def _send(self, conn: int, msg: Any) -> None:
        self._out.append(Send(conn, msg))

    def _log(self, level: str, text: str) -> None:
        self._out.append(Log(level, text))

    def _violation(self, conn: int, reason: str) -> None:
        self._log("warning", f"closing connection {conn}: {reason}")
        self._out.append(Close(conn, reason))
        self._disconnected(conn, reason)

    def _client(self, conn: int, role: str | None = None) -> Client:
        client = self.clients.get(conn)
        if client is None:
            raise ProtocolViolation("message from an unknown connection")
        if role is not None and client.role != role:
            raise ProtocolViolation(f"only a {role} may send this")
        return client

    def _own_id(self, client: Client, oid: int) -> None:
        if oid >> ID_BITS != client.no or oid in self.objects:
            raise ProtocolViolation(f"object id {oid} is not this client's to create")

    # ---- drivers (and executors submitting nested work) --------------------------------------
    def _on_register_function(self, conn: int, msg: RegisterFunction) -> None:
        self._client(conn)
        self.functions.setdefault(msg.fn_id, msg.payload)
        self._fn_keys.setdefault(msg.fn_id, msg.fn_id)

    def _on_submit(self, conn: int, msg: SubmitTask) -> None:
        client = self._client(conn)
        self._own_id(client, msg.task_id)
        fn_id = self._fn_keys.get(msg.fn_id)
        if fn_id is None:
            raise ProtocolViolation("task refers to a function that was never registered")
        if any(type(v) is not int or v < 0 for v in msg.resources.values()):
            raise ProtocolViolation("resource amounts must be non-negative integers")
        key = tuple(sorted(msg.resources.items()))
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = Shape(dict(msg.resources))
            shape.feasible = any(w.could_ever_fit(shape) for w in self.workers.values())
        name = self._names.get(msg.name)
        if name is None:
            name = msg.name if len(self._names) > 100_000 else self._names.setdefault(msg.name,
                                                                                      msg.name)
        task = Task(msg, conn, shape, fn_id, name)
        self.objects[task.id] = task
        client.holds.add(task.id)
        if msg.timeout > 0:
            task.deadline = self.now + msg.timeout
            heapq.heappush(self.deadlines, (task.deadline, task.id))
        failed: Obj | None = None
        for dep in msg.deps:
            obj = self.objects.get(dep)
            if obj is None:
                failed = Obj(SYSTEM_ERROR, system_error(
                    "lost", f"argument object {dep:#x} no longer exists"), (), [], 0)
                continue
            obj.holders += 1
            if isinstance(obj, Task):
                task.waiting += 1
                if obj.dependents is None:
                    obj.dependents = []
                obj.dependents.append(task)
            elif obj.status != OK and obj.status != STORED:
                failed = obj
        if failed is not None:
            self._finish(task, failed.status, failed.data, failed.bufs, [])
        elif task.waiting == 0:
            self._enqueue(task)
            self._dispatch()

    def _on_put(self, conn: int, msg: PutObject) -> None:
        client = self._client(conn)
        self._own_id(client, msg.object_id)
        if msg.status == OK:
            obj = Obj(OK, msg.data, msg.bufs, msg.refs, 1)
        elif msg.status == STORED:
            obj = self._stored(msg.object_id, msg.data, msg.refs, 1, None)
        else:
            raise ProtocolViolation(f"put of an object with status {msg.status}")
        self.objects[msg.object_id] = obj
        client.holds.add(msg.object_id)
        self._hold_contained(msg.refs)

    def _stored(self, oid: int, data: bytes, refs: list[int], holders: int,
                worker: Worker | None) -> Obj:
        """The directory entry of a value in a node's store (``worker`` if the scheduler knows
        it, else the node the location names); the node is told to keep it."""
        where = stored_at(data)
        if where is None:
            raise ProtocolViolation("malformed stored-object location")
        if worker is None:
            worker = self.workers.get(where[0])
        if worker is None:
            return Obj(SYSTEM_ERROR, system_error(
                "lost", f"object {oid:#x} was stored on worker {where[0]}, which is gone"),
                (), refs, holders)
        self._send(worker.conn, HoldObjects([oid]))
        return Obj(STORED, data, (), refs, holders, worker.id, where[1])

    def _on_refs(self, conn: int, msg: RefUpdate) -> None:
        client = self._client(conn)
        holds = client.holds
        for oid in msg.add:
            if oid not in holds:
                obj = self.objects.get(oid)
                if obj is not None:
                    holds.add(oid)
                    obj.holders += 1
        for oid in msg.drop:
            if oid in holds:
                holds.discard(oid)
                self._unhold(oid)

    def _on_subscribe(self, conn: int, msg: Subscribe) -> None:
        self._client(conn)
        for oid in msg.ids:
            obj = self.objects.get(oid)
            if obj is None:
                self._send(conn, ObjectValue(oid, SYSTEM_ERROR, system_error(
                    "lost", f"object {oid:#x} no longer exists (all its refs were dropped)"),
                    (), []))
            elif isinstance(obj, Obj):
                self._send(conn, ObjectValue(oid, obj.status, obj.data, obj.bufs, obj.refs))
            else:
                if obj.subscribers is None:
                    obj.subscribers = []
                if conn not in obj.subscribers:
                    obj.subscribers.append(conn)

    def _on_cancel(self, conn: int, msg: Cancel) -> None:
        self._client(conn)
        task = self.objects.get(msg.task_id)
        if type(task) is Task:
            self._cancel(task, "cancel() was called")

    def _cancel(self, task: Task, why: str) -> None:
        self._abort(task, "cancelled", f"task {task.name!r} was cancelled: {why}")

    def _abort(self, task: Task, kind: str, message: str) -> None:
        """Finish an unfinished task with a system error; a running one loses its executor
        (Aer runs cannot be interrupted: the process is killed, its resources return now)."""
        ex = task.executor if task.state == RUNNING else None  # ASSIGNED: stays a placeholder
        self._finish(task, SYSTEM_ERROR, system_error(kind, message), (), [])
        if ex is not None:
            self._send(ex.worker.conn, KillExecutor(ex.pid, f"task {task.id:#x}: {kind}"))
            self._out.append(Close(ex.conn, f"task {kind}"))
            self._executor_gone(ex, kind)

    def _on_status(self, conn: int, msg: StatusRequest) -> None:
        self._client(conn)
        self._send(conn, StatusReply(msg.req_id, self.status(asker=conn)))

    # ---- worker agents ---------------------------------------------------------------------
    def _on_register_worker(self, conn: int, msg: RegisterWorker) -> None:
        self._client(conn, "worker")
        if conn in self.worker_by_conn:
            raise ProtocolViolation("worker registered twice")
        if any(type(v) is not int or v < 0 for v in msg.resources.values()):
            raise ProtocolViolation("resource amounts must be non-negative integers")
        wid = self._next_worker
        self._next_worker += 1
        worker = Worker(wid, conn, msg.name, msg.resources, msg.gpu_ids, msg.pid, msg.info,
                        self.now)
        self.workers[wid] = worker
        self.worker_by_conn[conn] = worker
        self._send(conn, WorkerAccepted(wid))
        self._log("info", f"worker {wid} ({msg.name}) joined with {display(worker.total)}")
        self._refresh_feasibility()
        self._dispatch()

    def _on_worker_info(self, conn: int, msg: WorkerInfo) -> None:
        worker = self.worker_by_conn.get(conn)
        if worker is None:
            raise ProtocolViolation("worker info from a connection that is not a worker")
        worker.info = {**worker.info, **msg.info}

    def _on_copied(self, conn: int, msg: ObjectsCopied) -> None:
        worker = self.worker_by_conn.get(conn)
        if worker is None:
            raise ProtocolViolation("object copies reported by a connection that is not a worker")
        for oid in msg.ids:
            obj = self.objects.get(oid)
            if type(obj) is Obj and obj.node and obj.node != worker.id:
                if obj.copies is None:
                    obj.copies = []
                if worker.id not in obj.copies:
                    obj.copies.append(worker.id)
            else:  # freed meanwhile: the copy goes too
                self._send(conn, FreeObjects([oid]))

    def _on_heartbeat(self, conn: int, msg: Heartbeat) -> None:
        worker = self.worker_by_conn.get(conn)
        if worker is None:
            raise ProtocolViolation("heartbeat from a connection that is not a worker")
        worker.last_seen = self.now

    def _remove_worker(self, worker: Worker, reason: str) -> None:
        self.workers.pop(worker.id, None)
        self.worker_by_conn.pop(worker.conn, None)
        self._log("warning", f"worker {worker.id} ({worker.name}) removed: {reason}")
        lost = system_error("lost", f"the object was in the store of worker {worker.id} "
                                    f"({worker.name}), which was removed: {reason}")
        for obj in self.objects.values():
            if type(obj) is Obj and obj.status == STORED:
                if obj.node == worker.id:
                    obj.status, obj.data, obj.node = SYSTEM_ERROR, lost, 0
                elif obj.copies and worker.id in obj.copies:
                    obj.copies.remove(worker.id)
        for ex in list(worker.executors.values()):
            self._out.append(Close(ex.conn, f"worker {worker.id} removed"))
            self._executor_gone(ex, f"its worker {worker.id} ({worker.name}) was removed: {reason}")
        self._refresh_feasibility()

    # ---- executors -------------------------------------------------------------------------
    def _on_register_executor(self, conn: int, msg: RegisterExecutor) -> None:
        self._client(conn, "executor")
        worker = self.workers.get(msg.worker_id)
        if worker is None:
            raise ProtocolViolation(f"executor for unknown worker {msg.worker_id}")
        ex = Executor(conn, worker, msg.pid)
        self.executors[conn] = ex
        worker.executors[conn] = ex
        worker.spawning = max(0, worker.spawning - 1)
        worker.idle.append(ex)
        self._dispatch()

    def _executor_of(self, conn: int, task_id: int) -> Executor | None:
        """The executor running this task; None for an executor already let go (killed)."""
        ex = self.executors.get(conn)
        if ex is None:
            if conn in self.clients and self.clients[conn].role == "executor":
                return None
            raise ProtocolViolation("only an executor may report on tasks")
        if ex.task is None or ex.task.id != task_id:
            raise ProtocolViolation(f"executor reports on task {task_id:#x} it is not running")
        return ex

    def _on_task_done(self, conn: int, msg: TaskDone) -> None:
        ex = self._executor_of(conn, msg.task_id)
        if ex is None:
            return
        task: Task = ex.task
        old = self._fn_time.get(task.fn_id)
        self._fn_time[task.fn_id] = msg.elapsed if old is None else 0.8 * old + 0.2 * msg.elapsed
        if ex.queue:  # the executor goes on with the next task it holds, on the same capacity
            nxt: Task = ex.queue.popleft()
            ex.task, nxt.gpu_ids = nxt, task.gpu_ids
            if nxt.state == ASSIGNED:
                nxt.state = RUNNING
            task.executor = None
        else:
            self._free_executor(ex, task)
            ex.worker.idle.append(ex)
        if task.state != RUNNING:  # cancelled or timed out meanwhile: the value is discarded
            if msg.status == STORED:
                self._send(ex.worker.conn, HoldObjects([task.id]))
                self._send(ex.worker.conn, FreeObjects([task.id]))
            self._dispatch()
            return
        if msg.status == TASK_ERROR and msg.retryable and task.max_retries > 0:
            task.max_retries -= 1
            self._enqueue(task)
        else:
            self._finish(task, msg.status, msg.data, msg.bufs, msg.refs, ex.worker)
        self._dispatch()

    def _on_blocked(self, conn: int, msg: TaskBlocked) -> None:
        ex = self._executor_of(conn, msg.task_id)
        if ex is None:
            return
        task: Task = ex.task
        if not task.blocked:  # a task waiting on others gives back its share meanwhile (not GPUs)
            task.blocked = True
            ex.worker.release({k: v for k, v in task.shape.need.items() if k != "gpu"}, None)
            self._dispatch()

    def _on_returned(self, conn: int, msg: TaskReturned) -> None:
        ex = self.executors.get(conn)
        if ex is None:
            return
        returned = set(msg.task_ids)
        back = [t for t in ex.queue if t.id in returned]
        ex.queue = deque(t for t in ex.queue if t.id not in returned)
        self._requeue_front(back)
        self._dispatch()

    def _requeue_front(self, tasks: list[Task]) -> None:
        """Tasks given back unstarted go to the front of their queues, order kept."""
        for task in reversed(tasks):
            task.executor = None
            if task.state == ASSIGNED:
                task.state = READY
                task.shape.queue.appendleft(task)
                self.active[task.shape.key] = task.shape

    def _on_unblocked(self, conn: int, msg: TaskUnblocked) -> None:
        ex = self._executor_of(conn, msg.task_id)
        if ex is None:
            return
        task: Task = ex.task
        if task.blocked:
            task.blocked = False
            ex.worker.acquire({k: v for k, v in task.shape.need.items() if k != "gpu"}, None)

    def _free_executor(self, ex: Executor, task: Task) -> None:
        need = task.shape.need
        if task.blocked:
            need = {"gpu": need["gpu"]} if "gpu" in need else {}
            task.blocked = False
        ex.worker.release(need, task.gpu_ids)
        ex.task = None
        task.executor = None

    def _executor_gone(self, ex: Executor, why: str) -> None:
        self.executors.pop(ex.conn, None)
        worker = ex.worker
        worker.executors.pop(ex.conn, None)
        if ex in worker.idle:
            worker.idle.remove(ex)
        self._requeue_front(list(ex.queue))  # never started: no retry used
        ex.queue.clear()
        task: Task | None = ex.task
        if task is None:
            return
        self._free_executor(ex, task)
        if task.state != RUNNING:
            return
        if task.max_retries > 0:
            task.max_retries -= 1
            self._log("warning", f"task {task.name!r} ({task.id:#x}) will be retried: the "
                                 f"executor (pid {ex.pid}) running it died ({why})")
            self._enqueue(task)
        else:
            self._finish(task, SYSTEM_ERROR, system_error(
                "worker_died", f"task {task.name!r} ({task.id:#x}) failed: the executor "
                f"(pid {ex.pid}) on worker {worker.id} ({worker.name}) running it died ({why}); "
                "no retries left"), (), [])

    # ---- connections and time --------------------------------------------------------------
    def _disconnected(self, conn: int, reason: str) -> None:
        client = self.clients.pop(conn, None)
        ex = self.executors.get(conn)
        if ex is not None:
            self._executor_gone(ex, reason)
        worker = self.worker_by_conn.get(conn)
        if worker is not None:
            self._remove_worker(worker, f"connection lost ({reason})")
        if client is not None:
            # Its tasks have nobody to report to: cancel what has not finished, drop its refs.
            for obj in [o for o in self.objects.values() if type(o) is Task and o.owner == conn]:
                self._cancel(obj, "its owner disconnected")
            for oid in client.holds:
                self._unhold(oid)
            client.holds.clear()
        self._dispatch()

    def _tick(self, now: float) -> None:
        self.now = now
        limit = now - self.heartbeat_timeout
        for worker in [w for w in self.workers.values() if w.last_seen < limit]:
            self._out.append(Close(worker.conn, "no heartbeat"))
            self._remove_worker(worker, f"no heartbeat for {self.heartbeat_timeout:g} s")
        while self.deadlines and self.deadlines[0][0] <= now:
            _, tid = heapq.heappop(self.deadlines)
            task = self.objects.get(tid)
            if type(task) is not Task:
                continue
            infeasible = task.state == READY and not task.shape.feasible
            why = (infeasible_reason(task.shape, list(self.workers.values())) if infeasible
                   else "still running" if task.state == RUNNING else "not scheduled in time")
            self._abort(task, "infeasible" if infeasible else "timeout",
                        f"task {task.name!r} did not finish within its timeout: {why}")
        self._dispatch()

    # ---- queues and dispatch ----------------------------------------------------------------
    def _enqueue(self, task: Task) -> None:
        task.state = READY
        shape = task.shape
        shape.queue.append(task)
        self.active[shape.key] = shape
        if not shape.feasible and not shape.warned:
            shape.warned = True
            text = (f"task {task.name!r} is pending: "
                    f"{infeasible_reason(shape, list(self.workers.values()))}")
            self._log("warning", text)
            self._send(task.owner, Notice("warning", text))

    def _refresh_feasibility(self) -> None:
        workers = list(self.workers.values())
        for shape in self.shapes.values():
            shape.feasible = any(w.could_ever_fit(shape) for w in workers)
            if shape.feasible:
                shape.warned = False

    def _dispatch(self) -> None:
        if self._batching:  # once, after the whole batch
            self._dispatch_wanted = True
            return
        self._dispatch_wanted = False
        if not self.active:
            return
        workers = list(self.workers.values())
        for key, shape in list(self.active.items()):
            queue = shape.queue
            while queue:
                task = queue[0]
                if task.state != READY:
                    queue.popleft()
                    continue
                if not shape.feasible:
                    break
                worker, short = choose_worker(shape, workers, self._holder_of_args(task))
                if worker is None:
                    if short is not None:
                        self._need_executor(short)
                    if not self._send_ahead(task, workers):
                        break
                    continue
                queue.popleft()
                self._run(task, worker)
            if not queue:
                del self.active[key]

    def _holder_of_args(self, task: Task) -> int:
        """The worker whose store holds most bytes of the task's stored arguments (0: none)."""
        if not task.deps:
            return 0
        held: dict[int, int] = {}
        for dep in task.deps:
            obj = self.objects.get(dep)
            if type(obj) is Obj and obj.node:
                for wid in (obj.node, *(obj.copies or ())):
                    held[wid] = held.get(wid, 0) + obj.size
        return max(held, key=held.__getitem__) if held else 0

    def _need_executor(self, worker: Worker) -> None:
        cap = max(1, worker.total.get("cpu", 0) // SCALE) * self.max_executors_per_cpu + 8
        if worker.spawning == 0 and len(worker.executors) < cap:
            worker.spawning = 1
            self._send(worker.conn, SpawnExecutor(1))

    def _send_ahead(self, task: Task, workers: list[Worker]) -> bool:
        """Queue a short task behind a running one of the same shape; False if none fits."""
        if not self.prefetch or self._fn_time.get(task.fn_id, 1e9) >= self.prefetch_below:
            return False
        best: Executor | None = None
        for w in workers:
            for ex in w.executors.values():
                running = ex.task
                if (running is not None and running.shape is task.shape and not running.blocked
                        and len(ex.queue) < self.prefetch
                        and (best is None or len(ex.queue) < len(best.queue))):
                    best = ex
        if best is None:
            return False
        task.shape.queue.popleft()
        task.state, task.executor = ASSIGNED, best
        best.queue.append(task)
        self._send_task(best, task, best.task.gpu_ids)
        return True

    def _run(self, task: Task, worker: Worker) -> None:
        ex = worker.idle.pop()
        gpu_ids = worker.pick_gpus(task.shape.gpu) if task.shape.gpu else None
        worker.acquire(task.shape.need, gpu_ids)
        task.state, task.executor, task.gpu_ids = RUNNING, ex, gpu_ids
        ex.task = task
        self._send_task(ex, task, gpu_ids)

    def _send_task(self, ex: Executor, task: Task, gpu_ids: list[str] | None) -> None:
        conn = ex.conn
        if task.fn_id not in ex.fns:
            ex.fns.add(task.fn_id)
            self._send(conn, FunctionDef(task.fn_id, self.functions[task.fn_id]))
        for dep in task.deps:
            obj = self.objects.get(dep)
            if type(obj) is Obj:
                self._send(conn, ObjectValue(dep, obj.status, obj.data, obj.bufs, obj.refs))
        self._send(conn, RunTask(task.id, task.fn_id, task.args, task.bufs, task.deps,
                                 gpu_ids or [], task.shape.need, task.retry_exc))

    # ---- values ------------------------------------------------------------------------------
    def _finish(self, task: Task, status: int, data: bytes, bufs: tuple[Any, ...],
                refs: list[int], worker: Worker | None = None) -> None:
        """The task's value exists now (or its error): store it, tell who waits, release args."""
        task.state = FINISHED
        if status == STORED:
            obj = self._stored(task.id, data, refs, task.holders, worker)
            status, data = obj.status, obj.data
        else:
            obj = Obj(status, data, bufs, refs, task.holders)
        self.objects[task.id] = obj
        self._hold_contained(refs)
        owner = self.clients.get(task.owner)
        if owner is not None and task.id in owner.holds:
            self._send(task.owner, ObjectValue(task.id, status, data, bufs, refs))
        for conn in task.subscribers or ():
            if conn != task.owner and conn in self.clients:
                self._send(conn, ObjectValue(task.id, status, data, bufs, refs))
        for dependent in task.dependents or ():
            if dependent.state != PENDING:
                continue
            if status != OK and status != STORED:
                self._finish(dependent, status, data, bufs, [])
                continue
            dependent.waiting -= 1
            if dependent.waiting == 0:
                self._enqueue(dependent)
        for dep in task.deps:
            self._unhold(dep)
        task.args, task.bufs, task.deps, task.dependents = b"", (), NO_DEPS, None
        if obj.holders <= 0:
            self._free(task.id)

    def _hold_contained(self, refs: list[int]) -> None:
        for oid in refs:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.holders += 1

    def _unhold(self, oid: int) -> None:
        obj = self.objects.get(oid)
        if obj is None:
            return
        obj.holders -= 1
        if obj.holders <= 0 and type(obj) is Obj:
            self._free(oid)

    def _free(self, oid: int) -> None:
        stack = [oid]
        while stack:
            oid = stack.pop()
            obj = self.objects.pop(oid, None)
            if type(obj) is not Obj:
                continue
            if obj.node:  # its node(s) free the shared memory
                for wid in (obj.node, *(obj.copies or ())):
                    worker = self.workers.get(wid)
                    if worker is not None:
                        self._send(worker.conn, FreeObjects([oid]))
            for inner in obj.refs:
                child = self.objects.get(inner)
                if child is not None:
                    child.holders -= 1
                    if child.holders <= 0 and type(child) is Obj:
                        stack.append(inner)

    # ---- introspection -----------------------------------------------------------------------
    def status(self, asker: int = 0) -> dict[str, Any]:
        """Workers, task counts, infeasible targets; `clients` counts drivers but the asker."""
        counts = {"waiting": 0, "queued": 0, "running": 0, "infeasible": 0}
        infeasible: dict[tuple[tuple[str, int], ...], int] = {}
        for obj in self.objects.values():
            if type(obj) is not Task:
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
        workers = list(self.workers.values())
        return {
            "workers": [w.describe() for w in workers],
            "tasks": counts,
            "infeasible": [
                {"target": display(self.shapes[k].need), "count": n,
                 "reason": infeasible_reason(self.shapes[k], workers)}
                for k, n in infeasible.items()
            ],
            "objects": sum(1 for o in self.objects.values() if type(o) is Obj),
            "clients": sum(1 for c in self.clients.values()
                           if c.role == "driver" and c.conn != asker),
        }

    _handlers: dict[type, Any] = {
        RegisterFunction: _on_register_function,
        SubmitTask: _on_submit,
        PutObject: _on_put,
        RefUpdate: _on_refs,
        Subscribe: _on_subscribe,
        Cancel: _on_cancel,
        StatusRequest: _on_status,
        RegisterWorker: _on_register_worker,
        Heartbeat: _on_heartbeat,
        WorkerInfo: _on_worker_info,
        ObjectsCopied: _on_copied,
        RegisterExecutor: _on_register_executor,
        TaskDone: _on_task_done,
        TaskBlocked: _on_blocked,
        TaskUnblocked: _on_unblocked,
        TaskReturned: _on_returned,
    }
