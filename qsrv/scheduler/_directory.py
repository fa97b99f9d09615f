"""The object directory: every object id the scheduler knows, who holds it, and where a stored
value lives. Pure; changes only through `SchedulerState.handle`.

- `objects[id]` is a `Task` while the value is being computed, an `Obj` once it exists (the
  task *finishes*: `finish()`), and absent once freed.
- `holders` counts: each client holding a ref (once per client), each unfinished task that
  takes the id as an argument (once per mention), each value that contains it (once per
  mention). An `Obj` is freed when its count reaches zero; a `Task` when it finishes at zero.
  Freeing a value releases what it contains.
- A STORED value lives in the store of worker `node`; `copies` lists the nodes that pulled it.
  `on_node[worker id]` holds the ids each node's store keeps (original or copy), so losing a
  node costs what it held, not a scan of every object. Nodes are told to keep what the directory
  enters (HoldObjects) and to drop what it frees (FreeObjects).
- Values are opaque bytes: never unpickled here.
"""

from __future__ import annotations

from collections.abc import Callable

from qsrv.protocol import (
    OK,
    STORED,
    SYSTEM_ERROR,
    Bufs,
    FreeObjects,
    HoldObjects,
    ObjectValue,
    encode_system_error,
)
from qsrv.scheduler._events import Action, Send
from qsrv.scheduler._lifecycle import FINISHED, PENDING, set_state
from qsrv.scheduler._placement import Worker
from qsrv.scheduler._records import NO_DEPS, Client, Obj, Task


def _unset(task: Task) -> None:
    raise RuntimeError("Directory.ready was not set")


class Directory:
    def __init__(self, out: list[Action], clients: dict[int, Client],
                 workers: dict[int, Worker]) -> None:
        self.objects: dict[int, Task | Obj] = {}
        self.on_node: dict[int, set[int]] = {}  # worker id -> ids of STORED values it keeps
        self._out = out
        self._clients = clients
        self._workers = workers
        # Called for a PENDING task whose last argument now exists (queues it to run).
        self.ready: Callable[[Task], None] = _unset

    # ---- values come in ------------------------------------------------------------------
    def enter(self, oid: int, status: int, data: bytes, bufs: Bufs, refs: list[int],
              holders: int, where: tuple[int, int] | None = None,
              worker: Worker | None = None) -> Obj:
        """Enter the value of ``oid`` (in place of its task, if any); it holds what it contains.
        ``where`` (its checked (worker id, size)) comes with a STORED value: it is kept on
        ``worker`` when the scheduler knows which node made it, else on the node its location
        names, and is lost when that node is gone."""
        if where is None:
            obj = Obj(status, data, bufs, refs, holders)
        else:
            if worker is None:
                worker = self._workers.get(where[0])
            if worker is None:
                obj = Obj(SYSTEM_ERROR, encode_system_error(
                    "lost", f"object {oid:#x} was stored on worker {where[0]}, which is gone"),
                    (), refs, holders)
            else:
                self._out.append(Send(worker.conn, HoldObjects([oid])))
                obj = Obj(STORED, data, (), refs, holders, worker.id, where[1])
                self._index(oid, worker.id)
        objects = self.objects
        objects[oid] = obj
        for inner in refs:
            held = objects.get(inner)
            if held is not None:
                held.holders += 1
        return obj

    def finish(self, task: Task, status: int, data: bytes, bufs: Bufs, refs: list[int],
               where: tuple[int, int] | None = None, worker: Worker | None = None) -> None:
        """The task's value (or error) exists now: enter it, tell who waits, release the
        arguments. Dependents become ready, or fail with the same error."""
        set_state(task, FINISHED)
        tid = task.id
        obj = self.enter(tid, status, data, bufs, refs, task.holders, where, worker)
        status, data, bufs = obj.status, obj.data, obj.bufs
        out = self._out
        clients = self._clients
        owner = clients.get(task.owner)
        if owner is not None:
            owner.tasks.pop(tid, None)
            if tid in owner.holds:
                out.append(Send(task.owner, ObjectValue(tid, status, data, bufs, refs)))
                if owner.scope is not None and refs:  # a tenant may read what it was given
                    owner.scope.update(refs)
        for conn in task.subscribers or ():
            if conn != task.owner and conn in clients:
                out.append(Send(conn, ObjectValue(tid, status, data, bufs, refs)))
                scope = clients[conn].scope
                if scope is not None and refs:
                    scope.update(refs)
        for dependent in task.dependents or ():
            if dependent.state != PENDING:
                continue
            if status != OK and status != STORED:
                self.finish(dependent, status, data, bufs, [])
                continue
            dependent.waiting -= 1
            if dependent.waiting == 0:
                self.ready(dependent)
        for dep in task.deps:
            self.unhold(dep)
        task.args, task.bufs, task.deps, task.dependents = b"", (), NO_DEPS, None
        if obj.holders <= 0:
            self.free(tid)

    # ---- clients -------------------------------------------------------------------------
    def add_refs(self, client: Client, ids: list[int]) -> None:
        """The client holds refs to these objects now (once per client; unknown ids skipped)."""
        holds = client.holds
        objects = self.objects
        for oid in ids:
            if oid not in holds:
                obj = objects.get(oid)
                if obj is not None:
                    holds.add(oid)
                    obj.holders += 1

    def drop_refs(self, client: Client, ids: list[int]) -> None:
        """The client dropped its refs to these objects."""
        holds = client.holds
        for oid in ids:
            if oid in holds:
                holds.discard(oid)
                self.unhold(oid)

    def subscribe(self, conn: int, ids: list[int]) -> None:
        """Send each value to ``conn`` when it exists (now, if it does)."""
        for oid in ids:
            obj = self.objects.get(oid)
            if obj is None:
                self._out.append(Send(conn, ObjectValue(oid, SYSTEM_ERROR, encode_system_error(
                    "lost", f"object {oid:#x} no longer exists (all its refs were dropped)"),
                    (), [])))
            elif isinstance(obj, Obj):
                self._out.append(Send(conn, ObjectValue(oid, obj.status, obj.data, obj.bufs,
                                                        obj.refs)))
                client = self._clients.get(conn)
                if client is not None and client.scope is not None and obj.refs:
                    client.scope.update(obj.refs)
            else:
                if obj.subscribers is None:
                    obj.subscribers = []
                if conn not in obj.subscribers:
                    obj.subscribers.append(conn)

    # ---- holders -------------------------------------------------------------------------
    def unhold(self, oid: int) -> None:
        obj = self.objects.get(oid)
        if obj is None:
            return
        obj.holders -= 1
        if obj.holders <= 0 and type(obj) is Obj:
            self.free(oid)

    def free(self, oid: int) -> None:
        """Forget value ``oid`` (its nodes drop it), and release what it contains."""
        objects = self.objects
        stack = [oid]
        while stack:
            oid = stack.pop()
            obj = objects.pop(oid, None)
            if type(obj) is not Obj:
                continue
            if obj.node:  # its node(s) free the shared memory
                for wid in (obj.node, *(obj.copies or ())):
                    self._unindex(oid, wid)
                    worker = self._workers.get(wid)
                    if worker is not None:
                        self._out.append(Send(worker.conn, FreeObjects([oid])))
            for inner in obj.refs:
                child = objects.get(inner)
                if child is not None:
                    child.holders -= 1
                    if child.holders <= 0 and type(child) is Obj:
                        stack.append(inner)

    # ---- nodes ---------------------------------------------------------------------------
    def copied(self, worker: Worker, ids: list[int]) -> None:
        """``worker`` pulled copies of these values into its store."""
        for oid in ids:
            obj = self.objects.get(oid)
            if type(obj) is Obj and obj.node and obj.node != worker.id:
                if obj.copies is None:
                    obj.copies = []
                if worker.id not in obj.copies:
                    obj.copies.append(worker.id)
                    self._index(oid, worker.id)
            else:  # freed meanwhile: the copy goes too
                self._out.append(Send(worker.conn, FreeObjects([oid])))

    def lose_node(self, worker: Worker, reason: str) -> None:
        """``worker``'s store is gone: values kept only there are lost (they become errors
        of kind "lost"), copies there are forgotten."""
        ids = self.on_node.pop(worker.id, None)
        if not ids:
            return
        lost = encode_system_error("lost", f"the object was in the store of worker {worker.id} "
                                           f"({worker.name}), which was removed: {reason}")
        for oid in ids:
            obj = self.objects.get(oid)
            if type(obj) is not Obj:
                continue
            if obj.node == worker.id:
                obj.status, obj.data, obj.node = SYSTEM_ERROR, lost, 0
                for wid in obj.copies or ():  # no longer found through the directory
                    self._unindex(oid, wid)
                obj.copies = None
            elif obj.copies is not None:
                obj.copies.remove(worker.id)

    def holder_of_args(self, task: Task) -> int:
        """The worker whose store holds most bytes of the task's stored arguments (0: none)."""
        if not task.deps:
            return 0
        held: dict[int, int] = {}
        objects = self.objects
        for dep in task.deps:
            obj = objects.get(dep)
            if type(obj) is Obj and obj.node:
                for wid in (obj.node, *(obj.copies or ())):
                    held[wid] = held.get(wid, 0) + obj.size
        return max(held, key=held.__getitem__) if held else 0

    def _index(self, oid: int, wid: int) -> None:
        ids = self.on_node.get(wid)
        if ids is None:
            ids = self.on_node[wid] = set()
        ids.add(oid)

    def _unindex(self, oid: int, wid: int) -> None:
        ids = self.on_node.get(wid)
        if ids is not None:
            ids.discard(oid)
