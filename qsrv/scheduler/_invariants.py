"""`SchedulerState.validate_state()`: the scheduler's rules, checked over its whole state.

A walk over everything, for tests (the unit-test harness calls it after every event) and
debugging; never run per event in service. Each rule is stated where it is kept (the module
docstrings of _lifecycle, _directory, _dispatch, _recovery); here they are checked:

- registries: workers by id and by connection agree; every executor is in its worker's table
  and its worker is registered; the connections of both are still clients;
- tasks: only PENDING, READY, ASSIGNED or RUNNING ones are in the directory, each in its
  owner's task index; PENDING ones wait for exactly their arguments still being computed; READY
  ones are in their shape's queue once and that shape is active; ASSIGNED ones are in the queue
  of a live executor, RUNNING ones are the task of one; only RUNNING ones are blocked; a task
  with a timeout has its deadline in the heap;
- values: a known status; STORED exactly when they have a node, and that node and every copy
  is a registered worker; `on_node` lists exactly the values each node keeps;
- holders: every count equals the holds of clients plus the mentions by unfinished tasks'
  arguments and by contained refs; values are alive only while held; clients hold only ids
  that exist;
- executors: idle exactly when they have no task, in their worker's list for their tenant; what
  runs and what waits on them points back at them, in the states that may; an executor runs
  only tasks of its own tenant (a tenant's has its client's scope, the others none);
- resources: each worker's free amounts are its totals less what its executors' tasks hold
  (a blocked task holds only its GPU share) and what its ready reservations hold, and so is
  each GPU device's; a ready reservation's free amounts are its target less what the tasks
  running on its executors hold;
- reservations: live ones are pending, ready or infeasible; ready exactly when placed on a
  registered worker that lists it; the waiting ones (to place) are exactly the others, and
  infeasible exactly when no worker could ever hold them; their executors are dedicated to
  them, on their worker, idle (in their list, never the worker's) exactly when without a task,
  never sent tasks ahead; a reservation waits in its worker's claims exactly while it asked
  for an executor; their queues hold only their READY tasks (once) and finished ones; a READY
  task of a reservation is in its queue and the reservation is active;
- shapes: `feasible` is whether some worker could ever hold the shape; queues hold only READY
  tasks (once) and finished ones left behind; `counts` counts its unfinished tasks by state;
- placement index: an indexed shape lists exactly the workers where it fits now, those with an
  idle executor under their current (load, id) and the others by id, each with an entry in its
  heap; a shape not indexed lists none; the index knows exactly the registered workers; each
  shape's `ahead` lists exactly the executors running a short task of it, not blocked, with
  fewer than `prefetch` tasks queued, under their current (queued, worker id, connection).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from qsrv._resources import SCALE
from qsrv.protocol import OK, STORED, SYSTEM_ERROR, TASK_ERROR
from qsrv.scheduler._lifecycle import (
    ASSIGNED,
    FINISHED,
    PENDING,
    READY,
    RUNNING,
    InvariantError,
)
from qsrv.scheduler._placement import Executor
from qsrv.scheduler._records import Task

if TYPE_CHECKING:
    from qsrv.scheduler._state import SchedulerState


def check(s: SchedulerState) -> None:
    bad: list[str] = []
    _registries(s, bad)
    _objects(s, bad)
    _executors_and_resources(s, bad)
    _reservations(s, bad)
    _shapes(s, bad)
    _placement_index(s, bad)
    if bad:
        raise InvariantError("scheduler state is inconsistent:\n  " + "\n  ".join(bad))


def _registries(s: SchedulerState, bad: list[str]) -> None:
    for wid, w in s.workers.items():
        if w.id != wid or s.worker_by_conn.get(w.conn) is not w:
            bad.append(f"worker {wid} is not registered by id and connection alike")
        if w.conn not in s.clients:
            bad.append(f"worker {wid}'s connection {w.conn} is not a client")
    if len(s.worker_by_conn) != len(s.workers):
        bad.append("workers by connection and by id differ")
    for conn, ex in s.dispatcher.executors.items():
        if ex.conn != conn or ex.worker.executors.get(conn) is not ex:
            bad.append(f"executor {conn} is not in its worker's table")
        if s.workers.get(ex.worker.id) is not ex.worker:
            bad.append(f"executor {conn} belongs to worker {ex.worker.id}, which is gone")
        if conn not in s.clients:
            bad.append(f"executor {conn} is not a client")
    for w in s.workers.values():
        for conn, ex in w.executors.items():
            if s.dispatcher.executors.get(conn) is not ex:
                bad.append(f"worker {w.id} has executor {conn} the scheduler forgot")


def _objects(s: SchedulerState, bad: list[str]) -> None:
    objects = s.directory.objects
    executors = s.dispatcher.executors
    deadlines = set(s.recovery.deadlines)
    expected: Counter[int] = Counter()  # holders
    on_node: dict[int, set[int]] = {}
    for client in s.clients.values():
        for oid in client.holds:
            expected[oid] += 1
            if oid not in objects:
                bad.append(f"client {client.conn} holds {oid:#x}, which does not exist")
        for tid, task in client.tasks.items():
            if objects.get(tid) is not task:
                bad.append(f"client {client.conn} lists task {tid:#x}, not in the directory")
    for oid, obj in objects.items():
        if isinstance(obj, Task):
            for dep in obj.deps:
                if dep in objects:
                    expected[dep] += 1
            _task(s, obj, bad, executors, deadlines)
            continue
        for inner in obj.refs:
            if inner in objects:
                expected[inner] += 1
        if obj.holders <= 0:
            bad.append(f"value {oid:#x} is alive with {obj.holders} holders")
        if obj.status not in (OK, TASK_ERROR, SYSTEM_ERROR, STORED):
            bad.append(f"value {oid:#x} has status {obj.status}")
        if (obj.status == STORED) != bool(obj.node):
            bad.append(f"value {oid:#x}: status {obj.status} on node {obj.node}")
        if obj.node:
            nodes = [obj.node, *(obj.copies or ())]
            if len(set(nodes)) != len(nodes) or any(w not in s.workers for w in nodes):
                bad.append(f"value {oid:#x} is kept on nodes {nodes}: repeated or gone")
            for wid in nodes:
                on_node.setdefault(wid, set()).add(oid)
        elif obj.copies:
            bad.append(f"value {oid:#x} has copies but no node")
    for oid, obj in objects.items():
        if obj.holders != expected[oid]:
            bad.append(f"{oid:#x} counts {obj.holders} holders, not {expected[oid]}")
    for wid, ids in s.directory.on_node.items():
        if wid not in s.workers:
            bad.append(f"objects are indexed on worker {wid}, which is gone")
        if ids != on_node.get(wid, set()):
            bad.append(f"worker {wid}'s object index differs from the values it keeps")
    for wid, ids in on_node.items():
        if ids and wid not in s.directory.on_node:
            bad.append(f"worker {wid} keeps values that are not indexed")


def _task(s: SchedulerState, task: Task, bad: list[str], executors: dict[int, Executor],
          deadlines: set[tuple[float, int]]) -> None:
    name = f"task {task.id:#x} ({task.state.name})"
    state = task.state
    owner = s.clients.get(task.owner)
    if owner is None or owner.tasks.get(task.id) is not task:
        bad.append(f"{name} is not indexed under its owner {task.owner}")
    if state == FINISHED:
        bad.append(f"{name} is still in the directory")
    objects = s.directory.objects
    computing = sum(1 for d in task.deps if type(objects.get(d)) is Task)
    if task.waiting != (computing if state == PENDING else 0) or (
            state == PENDING and not computing):
        bad.append(f"{name} waits for {task.waiting} arguments, {computing} are computed")
    ex = task.executor
    if state in (PENDING, READY) and ex is not None:
        bad.append(f"{name} has an executor")
    if state in (ASSIGNED, RUNNING) and (ex is None or executors.get(ex.conn) is not ex):
        bad.append(f"{name} has no live executor")
    elif state == ASSIGNED and ex is not None and task not in ex.queue:
        bad.append(f"{name} is not in its executor's queue")
    elif state == RUNNING and ex is not None and ex.task is not task:
        bad.append(f"{name} is not its executor's task")
    if task.blocked and state != RUNNING:
        bad.append(f"{name} is blocked")
    res = task.reservation
    if res is not None and state != PENDING and s.reservations.live.get(res.id) is not res:
        bad.append(f"{name} is in reservation {res.id:#x}, which is not live")
    if state == ASSIGNED and res is not None:
        bad.append(f"{name} of a reservation was sent ahead")
    if state == READY and res is not None:
        if sum(1 for t in res.queue if t is task) != 1:
            bad.append(f"{name} is not in its reservation's queue exactly once")
        if s.dispatcher.reserved_active.get(res.id) is not res:
            bad.append(f"{name} waits in a reservation that is not active")
    elif state == READY:
        if sum(1 for t in task.shape.queue if t is task) != 1:
            bad.append(f"{name} is not in its shape's queue exactly once")
        if s.dispatcher.active.get(task.shape.key) is not task.shape:
            bad.append(f"{name} waits in a shape that is not active")
    if task.deadline and (task.deadline, task.id) not in deadlines:
        bad.append(f"{name} has a deadline that is not in the heap")


def _executors_and_resources(s: SchedulerState, bad: list[str]) -> None:
    for w in s.workers.values():
        lists = [("", w.idle), *w.tenant_idle.items()]
        idle = {id(ex) for _, lst in lists for ex in lst}
        if len(idle) != sum(len(lst) for _, lst in lists):
            bad.append(f"worker {w.id} lists an idle executor twice")
        for tenant, lst in lists:
            if any(ex.tenant != tenant for ex in lst):
                bad.append(f"worker {w.id} lists an executor idle for tenant {tenant!r}, "
                           "not its own")
        held: Counter[str] = Counter()
        devices: Counter[str] = Counter()
        for res in w.reservations.values():
            held.update(res.need)
            gpu = res.shape.gpu
            for d in res.gpu_ids or ():
                devices[d] += gpu if gpu < SCALE else SCALE
        for ex in w.executors.values():
            task = ex.task
            client = s.clients.get(ex.conn)
            if client is not None and (ex.tenant != client.tenant
                                       or (ex.scope is None) != (client.scope is None)):
                bad.append(f"executor {ex.conn} is tagged {ex.tenant!r}, its client "
                           f"{client.tenant!r}")
            for t in ([task] if task is not None else []) + list(ex.queue):
                if t.shape.tenant != ex.tenant:
                    bad.append(f"executor {ex.conn} of tenant {ex.tenant!r} holds task "
                               f"{t.id:#x} of tenant {t.shape.tenant!r}")
            if ex.reservation is not None:
                if id(ex) in idle:
                    bad.append(f"executor {ex.conn} of a reservation is idle in its worker's list")
                continue  # its task holds the reservation's capacity: see _reservations
            if (task is None) != (id(ex) in idle):
                bad.append(f"executor {ex.conn} is {'' if id(ex) in idle else 'not '}idle, "
                           f"{'without' if task is None else 'with'} a task")
            if task is None:
                if ex.queue:
                    bad.append(f"executor {ex.conn} has tasks ahead but none running")
                continue
            if task.executor is not ex or task.state not in (RUNNING, FINISHED):
                bad.append(f"executor {ex.conn} runs task {task.id:#x} ({task.state.name}), "
                           "which is not RUNNING (or a finished placeholder) on it")
            for t in ex.queue:
                if t.executor is not ex or t.state not in (ASSIGNED, FINISHED):
                    bad.append(f"executor {ex.conn} holds task {t.id:#x} ({t.state.name}) "
                               "ahead, which is not ASSIGNED (or a placeholder) to it")
            need = task.shape.need
            gpu = need.get("gpu", 0)
            held.update({"gpu": gpu} if task.blocked else need)
            for d in task.gpu_ids or ():
                devices[d] += gpu if gpu < SCALE else SCALE
        for key in {*w.total, *w.free, *held}:
            if w.total.get(key, 0) - held[key] != w.free.get(key, 0):
                bad.append(f"worker {w.id} has {w.free.get(key, 0)} {key} free; its tasks "
                           f"hold {held[key]} of {w.total.get(key, 0)}")
        for d in {*w.gpu_free, *devices}:
            if SCALE - devices[d] != w.gpu_free.get(d):
                bad.append(f"worker {w.id}'s GPU {d} has {w.gpu_free.get(d)} free; its tasks "
                           f"hold {devices[d]}")


def _shapes(s: SchedulerState, bad: list[str]) -> None:
    shapes = s.dispatcher.shapes
    workers = list(s.workers.values())
    by_state: Counter[tuple[int, int]] = Counter()  # (id of the shape, state)
    for obj in s.directory.objects.values():
        if isinstance(obj, Task):
            by_state[id(obj.shape), obj.state] += 1
    for key, shape in shapes.items():
        counted = [by_state[id(shape), state] for state in (PENDING, READY, ASSIGNED, RUNNING)]
        if shape.counts[:4] != counted:
            bad.append(f"shape {key} counts {shape.counts[:4]} unfinished tasks by state, "
                       f"not {counted}")
    for key, shape in s.dispatcher.active.items():
        if shapes.get(key) is not shape:
            bad.append(f"active shape {key} is not a known shape")
    for key, shape in shapes.items():
        if shape.key != key:
            bad.append(f"shape {key} is filed under another key")
        if shape.feasible != any(w.could_ever_fit(shape) for w in workers):
            bad.append(f"shape {key} is marked feasible={shape.feasible} wrongly")
        for task in shape.queue:
            if task.state not in (READY, FINISHED) or task.shape is not shape:
                bad.append(f"shape {key}'s queue holds task {task.id:#x} ({task.state.name})")


def _placement_index(s: SchedulerState, bad: list[str]) -> None:
    index = s.dispatcher.index
    if index.known != set(s.workers):
        bad.append(f"the placement index knows workers {sorted(index.known)}, "
                   f"not {sorted(s.workers)}")
    for key, shape in s.dispatcher.shapes.items():
        if shape.indexed != (index.shapes.get(key) is shape):
            bad.append(f"shape {key} is indexed={shape.indexed}, listed={key in index.shapes}")
        if not shape.indexed:
            if shape.idle or shape.busy:
                bad.append(f"shape {key} is not indexed but lists workers")
            continue
        expected_idle = {}
        expected_busy = set()
        for wid, w in s.workers.items():
            if w.fits_now(shape):
                if w.has_idle(shape.tenant):
                    expected_idle[wid] = (w.load(), wid)
                else:
                    expected_busy.add(wid)
        if shape.idle != expected_idle:
            bad.append(f"shape {key} lists workers with an idle executor {shape.idle}, "
                       f"not {expected_idle}")
        if shape.busy != expected_busy:
            bad.append(f"shape {key} lists workers without one {sorted(shape.busy)}, "
                       f"not {sorted(expected_busy)}")
        heap = set(shape.idle_heap)
        if any(k not in heap for k in shape.idle.values()):
            bad.append(f"shape {key}: a worker with an idle executor is missing from the heap")
        heap_ids = set(shape.busy_heap)
        if any(wid not in heap_ids for wid in shape.busy):
            bad.append(f"shape {key}: a worker without an idle executor is missing from the heap")
    for key in index.shapes:
        if key not in s.dispatcher.shapes:
            bad.append(f"the placement index holds shape {key}, which is unknown")
    expected_ahead: dict[int, tuple[object, tuple[int, int, int]]] = {}
    for conn, ex in s.dispatcher.executors.items():
        task = ex.task
        if task is not None and ex.short and not task.blocked and len(ex.queue) < index.prefetch:
            expected_ahead[conn] = (task.shape, (len(ex.queue), ex.worker.id, conn))
            if ex.ahead_of is not task.shape:
                bad.append(f"executor {conn} may take a task sent ahead but is not listed")
        elif ex.ahead_of is not None:
            bad.append(f"executor {conn} is listed to take a task sent ahead, wrongly")
    listed = 0
    for key, shape in s.dispatcher.shapes.items():
        ahead_heap = set(shape.ahead_heap)
        for conn, entry in shape.ahead.items():
            listed += 1
            want = expected_ahead.get(conn)
            if want is None or want[0] is not shape or want[1] != entry:
                bad.append(f"shape {key} lists executor {conn} for tasks sent ahead as {entry}, "
                           f"not {want and want[1]}")
            if entry not in ahead_heap:
                bad.append(f"shape {key}: executor {conn} is missing from its heap")
    if listed != len(expected_ahead):
        bad.append(f"{listed} executors listed for tasks sent ahead, not {len(expected_ahead)}")


def _reservations(s: SchedulerState, bad: list[str]) -> None:
    book = s.reservations
    workers = list(s.workers.values())
    for rid, res in book.live.items():
        name = f"reservation {rid:#x} ({res.status})"
        if res.id != rid or res.status not in ("pending", "ready", "infeasible"):
            bad.append(f"{name} is filed wrongly or has a final status")
        ready = res.status == "ready"
        w = res.worker
        if ready != (w is not None) or (w is not None and (
                s.workers.get(w.id) is not w or w.reservations.get(rid) is not res)):
            bad.append(f"{name} is placed on worker {w and w.id}, which does not list it")
        if (rid in book.waiting) == ready or (rid in book.waiting
                                               and book.waiting[rid] is not res):
            bad.append(f"{name} is {'' if rid in book.waiting else 'not '}waiting to be placed")
        feasible = any(wk.could_ever_fit(res.shape) for wk in workers)
        if not ready and (res.status == "infeasible") == feasible:
            bad.append(f"{name} is marked {res.status} wrongly")
        if (res.spawning != 0) != (w is not None and res in w.claims):
            bad.append(f"{name} asked for an executor {res.spawning} times, claims disagree")
        held: Counter[str] = Counter()
        idle = set(map(id, res.idle))
        if len(idle) != len(res.idle) or any(ex.conn not in res.executors for ex in res.idle):
            bad.append(f"{name} lists an idle executor twice or one not its own")
        for conn, ex in res.executors.items():
            if ex.reservation is not res or ex.worker is not w or ex.conn != conn \
                    or ex.tenant != res.tenant \
                    or s.dispatcher.executors.get(conn) is not ex:
                bad.append(f"{name} lists executor {conn}, not dedicated to it on its worker")
            if (ex.task is None) != (id(ex) in idle):
                bad.append(f"{name}'s executor {conn} is idle={id(ex) in idle} with task "
                           f"{ex.task and ex.task.id:#x}")
            if ex.queue or ex.ahead_of is not None:
                bad.append(f"{name}'s executor {conn} has tasks sent ahead")
            task = ex.task
            if task is not None:
                if task.reservation is not res:
                    bad.append(f"{name}'s executor {conn} runs a task of another")
                need = task.shape.need
                held.update({"gpu": need["gpu"]} if task.blocked and "gpu" in need
                            else {} if task.blocked else need)
        if ready:
            for key in {*res.need, *res.free, *held}:
                if res.need.get(key, 0) - held[key] != res.free.get(key, 0):
                    bad.append(f"{name} has {res.free.get(key, 0)} {key} free; its tasks "
                               f"hold {held[key]} of {res.need.get(key, 0)}")
        elif res.executors or res.free:
            bad.append(f"{name} is not placed but has executors or capacity")
        for task in res.queue:
            if task.reservation is not res or task.state not in (READY, FINISHED):
                bad.append(f"{name}'s queue holds task {task.id:#x} ({task.state.name})")
    for rid in book.waiting:
        if book.live.get(rid) is not book.waiting[rid]:
            bad.append(f"reservation {rid:#x} waits to be placed but is not live")
    for rid, res in s.dispatcher.reserved_active.items():
        if book.live.get(rid) is not res:
            bad.append(f"reservation {rid:#x} is active but not live")
    for ex in s.dispatcher.executors.values():
        owner = ex.reservation
        if owner is not None and owner.executors.get(ex.conn) is not ex:
            bad.append(f"executor {ex.conn} is dedicated to a reservation that does not list it")
    for w in s.workers.values():
        for res in w.claims:
            if book.live.get(res.id) is not res or res.worker is not w:
                bad.append(f"worker {w.id} has a claim of reservation {res.id:#x}, not live on it")
