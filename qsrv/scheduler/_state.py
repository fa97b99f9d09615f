"""The scheduler's decisions: a pure state machine. Events in, actions out; no IO, no clock.

`SchedulerState.handle(event)` is the only way state changes. Events (_events.py): Connected,
Received, ReceivedBatch, Disconnected, Tick. Actions: Send, Close, Log. The IO layer
(_server.py) carries them.

This module receives messages, checks them (_validate.py) and hands the work to the parts,
each with its own module and its own rules:

    _lifecycle.py   a task's states and the only moves between them (`set_state`)
    _directory.py   every object: Task while computed, Obj once it exists; holders; nodes
    _dispatch.py    queues by shape, placement on executors, tasks sent ahead, capacity
    _recovery.py    retries, timeouts, cancellation, executors and workers that are gone
    _reservations.py  capacity held on one worker for one holder; the tasks run inside it
    _status.py      what `qsrv status` shows (counts kept as tasks move, no scan)
    _invariants.py  `validate_state()`: every rule above, checked over the whole state

Peers are untrusted: a message that breaks the rules closes that one connection (as if it
dropped) and changes nothing else; the rest of its frame is ignored.

Memory comes back after a burst: when the directory has drained to a fraction of its peak, a
tick rebuilds what grew with it (`_compact`: the directory, clients' indexes, node indexes,
the deadline heap; queues holding many cancelled tasks are rebuilt at any tick); after a
large drain it counts one more in `compactions` (the IO layer then returns free heap pages
to the system).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from qsrv._memory import Peak, shrink_dict, shrink_set
from qsrv._resources import display
from qsrv.protocol import (
    ID_BITS,
    OK,
    STORED,
    SYSTEM_ERROR,
    TASK_ERROR,
    Bufs,
    Cancel,
    FreeObjects,
    Heartbeat,
    HoldObjects,
    Message,
    ObjectsCopied,
    PutObject,
    RefUpdate,
    RegisterExecutor,
    RegisterFunction,
    RegisterWorker,
    ReleaseReservation,
    Reserve,
    StatusReply,
    StatusRequest,
    SubmitReserved,
    SubmitTask,
    Subscribe,
    TaskBlocked,
    TaskDone,
    TaskReturned,
    TaskUnblocked,
    WorkerAccepted,
    WorkerInfo,
    encode_system_error,
)
from qsrv.scheduler import _invariants
from qsrv.scheduler._directory import Directory
from qsrv.scheduler._dispatch import Dispatcher
from qsrv.scheduler._events import (
    Action,
    Close,
    Connected,
    Disconnected,
    Event,
    Log,
    Received,
    ReceivedBatch,
    Send,
    Tick,
)
from qsrv.scheduler._lifecycle import FINISHED, READY, RUNNING, count_new
from qsrv.scheduler._placement import Executor, Worker
from qsrv.scheduler._records import Client, Obj, Task
from qsrv.scheduler._recovery import Recovery
from qsrv.scheduler._reservations import Reservations
from qsrv.scheduler._status import LoopLag, describe
from qsrv.scheduler._validate import (
    ProtocolViolation,
    check_amounts,
    check_location,
    check_new_id,
    check_readable,
    client_of,
    executor_of,
    worker_of,
)

_LARGE_DRAIN = 16_384  # objects: a drain from a peak this large is worth a heap trim

# (task, status, error data, the task whose failure it inherits or None): a task failed
# without its executor saying so (the scheduler decided it).
FailureHook = Callable[[Task, int, bytes, "Task | None"], None]


class Recorder(Protocol):
    """Who records tasks for monitors (qsrv.scheduler._monitor): told of each task submitted
    and of each run an executor reports, as the state machine handles them."""

    def submitted(self, task: Task) -> None: ...

    def ran(self, ex: Executor, task: Task, msg: TaskDone) -> None: ...


class _Directory(Directory):
    """The directory, telling `failed` of each task that ends in an error the scheduler
    decided (cancelled, timed out, worker lost with no retry left, reservation refused, an
    argument lost or failed): an executor's own report (``worker`` given) is not repeated."""

    def __init__(self, out: list[Action], clients: dict[int, Client],
                 workers: dict[int, Worker]) -> None:
        super().__init__(out, clients, workers)
        self.failed: FailureHook | None = None
        self._cause: Task | None = None  # the failing task whose dependents are finishing

    def finish(self, task: Task, status: int, data: bytes, bufs: Bufs, refs: list[int],
               where: tuple[int, int] | None = None, worker: Worker | None = None) -> None:
        if status in (OK, STORED):
            super().finish(task, status, data, bufs, refs, where, worker)
            return
        if worker is None and self.failed is not None:
            self.failed(task, status, data, self._cause)
        cause, self._cause = self._cause, task  # its dependents fail because of it
        try:
            super().finish(task, status, data, bufs, refs, where, worker)
        finally:
            self._cause = cause


class SchedulerState:
    """The whole scheduler, sans IO: registries of clients and workers, and the parts that
    keep objects (`directory`), run tasks (`dispatcher`) and handle failure and time
    (`recovery`). They share one list of actions, handed out by `handle()`."""

    def __init__(self, *, heartbeat_timeout: float = 5.0, max_executors_per_cpu: int = 4,
                 prefetch: int = 32, prefetch_below: float = 0.01) -> None:
        self.now = 0.0
        self.clients: dict[int, Client] = {}  # by conn
        self.workers: dict[int, Worker] = {}  # by worker id
        self.worker_by_conn: dict[int, Worker] = {}
        self._next_worker = 1
        self._fn_keys: dict[bytes, bytes] = {}  # interned function ids
        self._names: dict[str, str] = {}  # interned task names
        self._out: list[Action] = []  # shared by the parts; handed out by handle()
        self.directory = _Directory(self._out, self.clients, self.workers)
        self.dispatcher = Dispatcher(
            self._out, self.workers, self.directory, max_executors_per_cpu=max_executors_per_cpu,
            prefetch=prefetch, prefetch_below=prefetch_below)
        self.directory.ready = self.dispatcher.enqueue
        self.recovery = Recovery(self._out, self.workers, self.worker_by_conn, self.directory,
                                 self.dispatcher, heartbeat_timeout=heartbeat_timeout)
        self.reservations = Reservations(self._out, self.clients, self.workers, self.directory,
                                         self.dispatcher)
        self.recovery.worker_removed = self.reservations.worker_lost
        self.loop_lag = LoopLag()
        self._objects_peak = Peak()
        self.compactions = 0  # times memory was compacted after a large drain
        self.recorder: Recorder | None = None  # a monitor's; observes, changes nothing

    @property
    def objects(self) -> dict[int, Task | Obj]:
        return self.directory.objects

    @property
    def executors(self) -> dict[int, Executor]:
        return self.dispatcher.executors

    # ---- entry point -------------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        """Apply one event; return the actions to carry out, in order."""
        if type(event) is Received:
            self._receive(event.conn, event.msg)
        elif type(event) is ReceivedBatch:
            dispatcher = self.dispatcher
            dispatcher.batching = True
            try:
                for msg in event.msgs:
                    if not self._receive(event.conn, msg):
                        break  # the connection was closed: ignore the rest of its frame
            finally:
                dispatcher.batching = False
            if dispatcher.wanted:
                dispatcher.dispatch()
            self._objects_peak.see(len(self.directory.objects))
        elif type(event) is Tick:
            self._tick(event)
        elif type(event) is Connected:
            self.clients[event.conn] = Client(event.conn, event.role, event.client_no,
                                              event.tenant)
        elif type(event) is Disconnected:
            self._disconnected(event.conn, event.reason)
        out = self._out
        if not out:
            return []
        actions = out.copy()
        out.clear()
        return actions

    def validate_state(self) -> None:
        """Check every invariant over the whole state (InvariantError if one is broken).
        Costs a walk over everything: for tests and debugging, never per event in service."""
        _invariants.check(self)

    def status(self, asker: int = 0) -> dict[str, Any]:
        """Workers, task counts, infeasible targets, reservations; `clients` counts drivers
        but the asker."""
        out = describe(len(self.directory.objects), self.workers, self.dispatcher.shapes,
                       self.clients, asker, self.loop_lag.describe())
        out["reservations"] = self.reservations.describe()
        return out

    def _receive(self, conn: int, msg: Message) -> bool:
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

    def _violation(self, conn: int, reason: str) -> None:
        self._out.append(Log("warning", f"closing connection {conn}: {reason}"))
        self._out.append(Close(conn, reason))
        self._disconnected(conn, reason)

    # ---- drivers (and executors submitting nested work) --------------------------------------
    def _on_register_function(self, conn: int, msg: RegisterFunction) -> None:
        client_of(self.clients, conn)
        self.dispatcher.functions.setdefault(msg.fn_id, msg.payload)
        self._fn_keys.setdefault(msg.fn_id, msg.fn_id)

    def _on_submit(self, conn: int, msg: SubmitTask | SubmitReserved,
                   reservation: int = 0) -> None:
        client = client_of(self.clients, conn)
        objects = self.directory.objects
        check_new_id(client, msg.task_id, objects)
        if client.scope is not None:
            check_readable(client, msg.deps)
        fn_id = self._fn_keys.get(msg.fn_id)
        if fn_id is None:
            raise ProtocolViolation("task refers to a function that was never registered")
        check_amounts(msg.resources)
        shape = self.dispatcher.shape_of(msg.resources, client.tenant)
        name = self._names.get(msg.name)
        if name is None:
            name = msg.name if len(self._names) > 100_000 else self._names.setdefault(msg.name,
                                                                                      msg.name)
        task = Task(msg, conn, shape, fn_id, name)
        count_new(task)
        recorder = self.recorder
        if recorder is not None:
            recorder.submitted(task)
        objects[task.id] = task
        client.holds.add(task.id)
        client.tasks[task.id] = task
        if msg.timeout > 0:
            self.recovery.set_deadline(task, self.now + msg.timeout)
        failed: tuple[int, bytes, Bufs] | None = None
        if reservation:
            refused = self.reservations.admit(client, task, reservation)
            if refused is not None:
                failed = SYSTEM_ERROR, encode_system_error("reservation", refused), ()
        for dep in msg.deps:
            obj = objects.get(dep)
            if obj is None:
                failed = SYSTEM_ERROR, encode_system_error(
                    "lost", f"argument object {dep:#x} no longer exists"), ()
                continue
            obj.holders += 1
            if isinstance(obj, Task):
                task.waiting += 1
                if obj.dependents is None:
                    obj.dependents = []
                obj.dependents.append(task)
            elif obj.status != OK and obj.status != STORED:
                failed = obj.status, obj.data, obj.bufs
        if failed is not None:
            self.directory.finish(task, *failed, [])
        elif task.waiting == 0:
            self.dispatcher.enqueue(task)
            self.dispatcher.dispatch()

    def _on_submit_reserved(self, conn: int, msg: SubmitReserved) -> None:
        self._on_submit(conn, msg, msg.reservation or -1)

    # ---- reservations ------------------------------------------------------------------------
    def _on_reserve(self, conn: int, msg: Reserve) -> None:
        client = client_of(self.clients, conn)
        if msg.res_id >> ID_BITS != client.no or msg.res_id in self.reservations.live \
                or msg.res_id in self.reservations.released:
            raise ProtocolViolation(f"reservation id {msg.res_id} is not this client's to create")
        check_amounts(msg.resources)
        self.reservations.reserve(client, msg)
        self.dispatcher.dispatch()

    def _on_release(self, conn: int, msg: ReleaseReservation) -> None:
        client = client_of(self.clients, conn)
        self.reservations.release_by(client, msg.res_id)
        self.dispatcher.dispatch()

    def _on_put(self, conn: int, msg: PutObject) -> None:
        client = client_of(self.clients, conn)
        check_new_id(client, msg.object_id, self.directory.objects)
        if client.scope is not None:
            check_readable(client, msg.refs)
        if msg.status == OK:
            where = None
        elif msg.status == STORED:
            where = check_location(msg.data)
        else:
            raise ProtocolViolation(f"put of an object with status {msg.status}")
        self.directory.enter(msg.object_id, msg.status, msg.data, msg.bufs, msg.refs, 1, where)
        client.holds.add(msg.object_id)

    def _on_refs(self, conn: int, msg: RefUpdate) -> None:
        client = client_of(self.clients, conn)
        if client.scope is not None:
            check_readable(client, msg.add)
        self.directory.add_refs(client, msg.add)
        self.directory.drop_refs(client, msg.drop)

    def _on_subscribe(self, conn: int, msg: Subscribe) -> None:
        client = client_of(self.clients, conn)
        if client.scope is not None:
            check_readable(client, msg.ids)
        self.directory.subscribe(conn, msg.ids)

    def _on_cancel(self, conn: int, msg: Cancel) -> None:
        client_of(self.clients, conn)
        task = self.directory.objects.get(msg.task_id)
        if type(task) is Task:
            self.recovery.cancel(task, "cancel() was called")

    def _on_status(self, conn: int, msg: StatusRequest) -> None:
        client_of(self.clients, conn)
        self._out.append(Send(conn, StatusReply(msg.req_id, self.status(asker=conn))))

    # ---- worker agents ---------------------------------------------------------------------
    def _on_register_worker(self, conn: int, msg: RegisterWorker) -> None:
        client_of(self.clients, conn, "worker")
        if conn in self.worker_by_conn:
            raise ProtocolViolation("worker registered twice")
        check_amounts(msg.resources)
        wid = self._next_worker
        self._next_worker += 1
        worker = Worker(wid, conn, msg.name, msg.resources, msg.gpu_ids, msg.pid, msg.info,
                        self.recovery.awake)
        self.workers[wid] = worker
        self.worker_by_conn[conn] = worker
        self._out.append(Send(conn, WorkerAccepted(wid)))
        self._out.append(Log("info", f"worker {wid} ({msg.name}) joined with "
                                     f"{display(worker.total)}"))
        self.dispatcher.refresh_feasibility()
        self.dispatcher.dispatch()

    def _on_worker_info(self, conn: int, msg: WorkerInfo) -> None:
        worker = worker_of(self.worker_by_conn, conn, "worker info")
        worker.info = {**worker.info, **msg.info}

    def _on_copied(self, conn: int, msg: ObjectsCopied) -> None:
        worker = worker_of(self.worker_by_conn, conn, "object copies report")
        self.directory.copied(worker, msg.ids)

    def _on_heartbeat(self, conn: int, msg: Heartbeat) -> None:
        worker = worker_of(self.worker_by_conn, conn, "heartbeat")
        worker.last_seen = self.recovery.awake

    # ---- executors -------------------------------------------------------------------------
    def _on_register_executor(self, conn: int, msg: RegisterExecutor) -> None:
        client = client_of(self.clients, conn, "executor")
        worker = self.workers.get(msg.worker_id)
        if worker is None:
            raise ProtocolViolation(f"executor for unknown worker {msg.worker_id}")
        if conn in self.dispatcher.executors:
            raise ProtocolViolation("executor registered twice")
        self.dispatcher.add_executor(conn, worker, msg.pid, client.tenant, client.scope)
        self.dispatcher.dispatch()

    def _on_task_done(self, conn: int, msg: TaskDone) -> None:
        found = executor_of(self.dispatcher.executors, self.clients, conn, msg.task_id)
        if found is None:
            return
        ex, task = found
        if ex.scope is not None and msg.refs:  # a tenant's executor names only what it may
            check_readable(self.clients[conn], msg.refs)
        running = task.state == RUNNING  # else cancelled or timed out meanwhile
        recorder = self.recorder
        if recorder is not None and running:
            recorder.ran(ex, task, msg)
        where = check_location(msg.data) if running and msg.status == STORED else None
        self.dispatcher.done_on(ex, task, msg.elapsed)
        if not running:  # the value is discarded
            if msg.status == STORED:
                self._out.append(Send(ex.worker.conn, HoldObjects([task.id])))
                self._out.append(Send(ex.worker.conn, FreeObjects([task.id])))
        elif not (msg.status == TASK_ERROR and msg.retryable and self.recovery.retry(task)):
            self.directory.finish(task, msg.status, msg.data, msg.bufs, msg.refs, where,
                                  ex.worker)
        self.dispatcher.dispatch()

    def _on_blocked(self, conn: int, msg: TaskBlocked) -> None:
        found = executor_of(self.dispatcher.executors, self.clients, conn, msg.task_id)
        if found is not None and self.dispatcher.block(*found):
            self.dispatcher.dispatch()

    def _on_unblocked(self, conn: int, msg: TaskUnblocked) -> None:
        found = executor_of(self.dispatcher.executors, self.clients, conn, msg.task_id)
        if found is not None:
            self.dispatcher.unblock(*found)

    def _on_returned(self, conn: int, msg: TaskReturned) -> None:
        ex = self.dispatcher.executors.get(conn)
        if ex is None:
            return
        self.dispatcher.give_back(ex, msg.task_ids)
        self.dispatcher.dispatch()

    # ---- connections and time --------------------------------------------------------------
    def _disconnected(self, conn: int, reason: str) -> None:
        client = self.clients.pop(conn, None)
        ex = self.dispatcher.executors.get(conn)
        if ex is not None:
            self.recovery.executor_gone(ex, reason)
        worker = self.worker_by_conn.get(conn)
        if worker is not None:
            self.recovery.remove_worker(worker, f"connection lost ({reason})")
        if client is not None:
            self.reservations.holder_gone(conn)
            # Its tasks have nobody to report to: cancel what has not finished, drop its refs.
            for task in list(client.tasks.values()):
                if task.state != FINISHED:  # else it failed with an argument cancelled before
                    self.recovery.cancel(task, "its owner disconnected")
            client.tasks.clear()
            self.directory.drop_refs(client, list(client.holds))
        self.dispatcher.dispatch()

    def _tick(self, tick: Tick) -> None:
        self.loop_lag.record(tick.now - self.now if self.now else 0.0, tick.stalled, tick.lag)
        self.now = tick.now
        self.recovery.tick(tick.now, tick.stalled)
        self.reservations.tick(tick.now)
        self.dispatcher.tick(tick.now)
        self.dispatcher.dispatch()
        self._compact_queues()
        peak = self._objects_peak.drained(len(self.directory.objects))
        if peak:
            self._compact()
            if peak >= _LARGE_DRAIN:
                self.compactions += 1

    # ---- memory after a drain --------------------------------------------------------------
    def _compact(self) -> None:
        """The directory drained: rebuild what grew with it (dicts and sets never shrink)."""
        directory = self.directory
        shrink_dict(directory.objects)
        for client in self.clients.values():
            shrink_set(client.holds)
            shrink_dict(client.tasks)
        for ids in directory.on_node.values():
            shrink_set(ids)
        shrink_dict(self._names)
        self.recovery.compact()

    def _compact_queues(self) -> None:
        """Rebuild a shape's queue when most of it is tasks finished meanwhile (cancelled,
        timed out): they are skipped when popped, but held until then."""
        for shape in self.dispatcher.active.values():
            queue = shape.queue
            ready = shape.counts[READY]
            if len(queue) - ready > max(4096, ready):
                live = [t for t in queue if t.state == READY]
                queue.clear()
                queue.extend(live)

    _handlers: ClassVar[dict[type[Message], Callable[[SchedulerState, int, Any], None]]] = {
        RegisterFunction: _on_register_function,
        SubmitTask: _on_submit,
        SubmitReserved: _on_submit_reserved,
        Reserve: _on_reserve,
        ReleaseReservation: _on_release,
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
