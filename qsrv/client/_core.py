"""What a client of the cluster knows, whatever carries its bytes: refs, values, waiters.

Shared by the driver (an IO thread) and executors (a blocking socket). Thread-safe: user threads
submit and wait, the transport thread delivers values. The transport drains `take_outbox()`
when `flush_soon` asks it to, and feeds `on_value` / `on_closed`.

Invariants:
- `counts[id]` is the number of live ObjectRef instances for id in this process; the scheduler
  is told once when it goes 0 -> 1 for a ref that arrived from elsewhere (RefUpdate.add), and
  once when it drops to 0 (RefUpdate.drop). Refs minted here are held by the scheduler from
  their SubmitTask/PutObject on.
- `values` holds received values only for ids with counts > 0.
- `expect` holds ids whose value will be pushed without asking: own tasks, subscriptions --
  while a ref is held (dropping the last one forgets it: nothing is pushed after that).

Memory comes back after a burst: when the refs counted here drain to a fraction of their peak,
`take_outbox` rebuilds the tables that grew with them (dicts and sets never shrink) and, after
a large drain, returns free heap pages to the system, then once more a second later after a
full collection (what was sent and received about the drain is freed by then, and the
interpreter's free lists, which pin what the drain freed, are emptied); the threads of the
transport share glibc's main heap (`qsrv._memory.limit_arenas`).
"""

from __future__ import annotations

import gc
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from qsrv._memory import Peak, limit_arenas, shrink_dict, shrink_set, trim
from qsrv.client._ref import ObjectRef
from qsrv.codec import dumps, loads
from qsrv.errors import (
    SYSTEM_ERRORS,
    ConnectionClosedError,
    ConnectionLostError,
    ObjectStoreFullError,
    ProtocolError,
    QsrvError,
    SerializationError,
    TaskError,
)
from qsrv.protocol import (
    ID_BITS,
    OK,
    STORED,
    TASK_ERROR,
    Cancel,
    Message,
    ObjectValue,
    PutObject,
    RefUpdate,
    RegisterFunction,
    ReleaseReservation,
    ReservationUpdate,
    Reserve,
    SubmitReserved,
    SubmitTask,
    Subscribe,
    decode_system_error,
)
from qsrv.store import MIN_STORED, NodeStore, fetch

_LARGE_DRAIN = 16_384  # refs: a drain from a peak this large is worth a heap trim


def _release() -> None:
    """After a large drain has settled: a full collection, then free pages back."""
    gc.collect()
    trim()


def _size(data: bytes, bufs: tuple[Any, ...]) -> int:
    return len(data) + sum(memoryview(b).nbytes for b in bufs)


class TaskOptions:
    """Options of one task submission (already validated)."""

    __slots__ = ("max_retries", "name", "reservation", "resources", "retry_exceptions",
                 "timeout")

    def __init__(self, name: str, resources: dict[str, int], max_retries: int,
                 timeout: float | None, retry_exceptions: bool, reservation: int = 0) -> None:
        self.name = name
        self.resources = resources
        self.max_retries = max_retries
        self.timeout = timeout
        self.retry_exceptions = retry_exceptions
        self.reservation = reservation  # the id of the reservation it runs in; 0: none


def function_id(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def raise_error(value: ObjectValue) -> None:
    """Raise the error carried by a non-OK value."""
    if value.status == TASK_ERROR:
        cause, tb, message = loads(value.data, value.bufs)
        if cause is None:
            raise TaskError(message, tb)
        raise TaskError.wrap(cause, tb)
    try:
        kind, message = decode_system_error(value.data)
        cls = SYSTEM_ERRORS[kind]
    except (ProtocolError, KeyError):
        raise QsrvError(f"malformed error value for object {value.object_id:#x}") from None
    raise cls(message)


def _dump_arguments(name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                    retry_types: tuple[type[BaseException], ...] | None
                    ) -> tuple[bytes, tuple[Any, ...], list[int]]:
    """A task's arguments, pickled; a SerializationError names the argument that cannot be."""
    try:
        return dumps((args, kwargs, retry_types))
    except Exception as exc:
        named = [(f"argument {i}", v) for i, v in enumerate(args)]
        named += [(f"argument {k!r}", v) for k, v in kwargs.items()]
        which = "its arguments"
        for label, value in named:
            try:
                dumps(value)
            except Exception:
                which = f"{label} (a {type(value).__name__})"
                break
        raise SerializationError(f"task {name!r}: {which} cannot be pickled: {exc}") from exc


class ClientCore:
    def __init__(self, client_no: int, flush_soon: Callable[[], None],
                 block: Callable[[threading.Event, float | None], bool], *,
                 pumps: bool = False) -> None:
        self.client_no = client_no
        self.block = block  # waits for an event while values keep arriving
        self.pumps = pumps  # values arrive only while a waiter runs `block` (executors)
        self._base = client_no << ID_BITS
        self._seq = 0
        self.flush_soon = flush_soon
        self.lock = threading.Lock()
        self.counts: dict[int, int] = {}
        self.values: dict[int, ObjectValue] = {}
        self.expect: set[int] = set()
        self.waiters: dict[int, list[Callable[[int], None]]] = {}
        self.dropped: list[int] = []  # appended by ObjectRef.__del__ from any thread
        self._adds: list[int] = []
        self._outbox: list[Message] = []
        self._functions: set[bytes] = set()
        self.closed: BaseException | None = None
        self.store: NodeStore | None = None
        self.find_store: Callable[[], NodeStore | None] | None = None
        self.token = ""  # proves this process to the nodes it pulls objects from
        self._store_retry = 0.0
        self.duplicates = 0  # values delivered again for an id that had one: must stay 0
        self._peak = Peak()  # of len(counts)
        # Reservations held through this connection: id -> what to tell of their updates.
        self.reservations: dict[int, Callable[[str, str, str], None]] = {}
        limit_arenas()  # before the transport starts its threads

    # ---- creating refs ----------------------------------------------------------------------
    def _mint(self) -> int:
        self._seq += 1
        return self._base | self._seq

    def submit(self, fn_id: bytes, fn_payload: Callable[[], bytes], args: tuple[Any, ...],
               kwargs: dict[str, Any], opts: TaskOptions,
               retry_types: tuple[type[BaseException], ...] | None = None) -> int:
        """Queue a task; returns the id of its result (held once, for the caller's ref)."""
        data, bufs, refs = _dump_arguments(opts.name, args, kwargs, retry_types)
        held = None
        if _size(data, bufs) >= MIN_STORED and self._node_store() is not None:
            # Large arguments go to the node's store like a put; the task gets a ref to them
            # (the executor resolves a ref at the top of its arguments to its value).
            held = ObjectRef(self._put_encoded(data, bufs, refs))
            data, bufs, refs = dumps(held)
        with self.lock:
            self._check_open()
            if fn_id not in self._functions:
                self._functions.add(fn_id)
                self._outbox.append(RegisterFunction(fn_id, fn_payload()))
            oid = self._mint()
            self.counts[oid] = 1
            self.expect.add(oid)
            if opts.reservation:
                self._outbox.append(SubmitReserved(
                    opts.reservation, oid, fn_id, data, bufs, refs, opts.resources,
                    opts.max_retries, float(opts.timeout or 0.0), opts.retry_exceptions,
                    opts.name))
            else:
                self._outbox.append(SubmitTask(
                    oid, fn_id, data, bufs, refs, opts.resources, opts.max_retries,
                    float(opts.timeout or 0.0), opts.retry_exceptions, opts.name))
        self.flush_soon()
        return oid

    # ---- reservations -------------------------------------------------------------------------
    def reserve(self, resources: dict[str, int], name: str, timeout: float,
                on_update: Callable[[str, str, str], None]) -> int:
        """Ask for a reservation; returns its id. ``on_update(status, worker, reason)`` is
        called (on the transport's thread) each time the scheduler reports a change, and once
        with "released" if the connection ends first."""
        with self.lock:
            self._check_open()
            rid = self._mint()
            self.reservations[rid] = on_update
            self._outbox.append(Reserve(rid, resources, name, timeout))
        self.flush_soon()
        return rid

    def release(self, rid: int) -> None:
        with self.lock:
            if self.reservations.pop(rid, None) is None or self.closed is not None:
                return
            self._outbox.append(ReleaseReservation(rid))
        self.flush_soon()

    def on_reservation(self, msg: ReservationUpdate) -> None:
        with self.lock:
            notify = self.reservations.get(msg.res_id)
            if msg.status == "released":
                self.reservations.pop(msg.res_id, None)
        if notify is not None:
            notify(msg.status, msg.worker, msg.reason)

    def put(self, value: Any) -> int:
        """Store a value; returns its id (held once, for the caller's ref)."""
        try:
            encoded = dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"put(): a {type(value).__name__} cannot be pickled: {exc}") from exc
        return self._put_encoded(*encoded)

    def _put_encoded(self, data: bytes, bufs: tuple[Any, ...], refs: list[int]) -> int:
        with self.lock:
            self._check_open()
            oid = self._mint()
        status, data, bufs = self.encode(oid, data, bufs)
        with self.lock:
            self.counts[oid] = 1
            self.values[oid] = ObjectValue(oid, status, data, bufs, refs)
            self._outbox.append(PutObject(oid, data, bufs, refs, status))
        self.flush_soon()
        return oid

    # ---- the node's store -------------------------------------------------------------------
    def _node_store(self) -> NodeStore | None:
        store = self.store
        if store is not None and store.closed:
            store = self.store = None
        if store is None and self.find_store is not None:
            now = time.monotonic()
            if now >= self._store_retry:
                self._store_retry = now + 5.0  # no store here: look again in a while
                store = self.store = self.find_store()
        return store

    def encode(self, oid: int, data: bytes, bufs: tuple[Any, ...]
               ) -> tuple[int, bytes, tuple[Any, ...]]:
        """(status, data, bufs) to send for value ``oid``: a large one goes to the node's
        store and travels as its location (STORED), a small one inline (OK)."""
        if _size(data, bufs) < MIN_STORED:
            return OK, data, bufs
        store = self._node_store()
        if store is None:
            return OK, data, bufs
        try:
            return STORED, store.put(oid, data, bufs), ()
        except ObjectStoreFullError:
            raise
        except QsrvError:  # the agent went away: this value travels inline
            return OK, data, bufs

    def load(self, msg: ObjectValue) -> Any:
        """The value carried by an OK or STORED message (mapped from the store, no copy)."""
        if msg.status != STORED:
            return loads(msg.data, msg.bufs)
        store = self._node_store()
        if store is None:  # no agent on this node: pull it straight from its holder
            return loads(*fetch(msg.object_id, msg.data, self.token))
        return loads(*store.load(msg.object_id, msg.data))

    def track(self, oid: int) -> None:
        """Count a ref that arrived inside a value (the caller makes the ObjectRef)."""
        with self.lock:
            count = self.counts.get(oid, 0)
            self.counts[oid] = count + 1
            if count == 0:
                self._adds.append(oid)

    def cancel(self, oid: int) -> None:
        with self.lock:
            self._outbox.append(Cancel(oid))
        self.flush_soon()

    def _check_open(self) -> None:
        if self.closed is not None:
            raise self.ended()

    def ended(self) -> ConnectionClosedError | ConnectionLostError:
        """Why this connection can no longer be used: closed here, or lost."""
        closed = self.closed
        if isinstance(closed, ConnectionClosedError):
            return ConnectionClosedError(f"the cluster connection was closed: {closed}")
        return ConnectionLostError(f"the cluster connection was lost: {closed}")

    # ---- transport side ---------------------------------------------------------------------
    def has_outgoing(self) -> bool:
        return bool(self._outbox or self.dropped or self._adds)

    def take_outbox(self) -> list[Message]:
        """Messages to send now, oldest first (ref updates last)."""
        with self.lock:
            drops: list[int] = []
            dropped = self.dropped
            counts = self.counts
            while dropped:
                oid = dropped.pop()
                count = counts.get(oid, 0) - 1
                if count > 0:
                    counts[oid] = count
                elif count == 0:
                    del counts[oid]
                    self.values.pop(oid, None)
                    self.expect.discard(oid)
                    drops.append(oid)
            out, self._outbox = self._outbox, []
            if drops or self._adds:
                out.append(RefUpdate(self._adds, drops))
                self._adds = []
            drained = self._peak.drained(len(counts))
            if drained:
                self._compact()
        if drained >= _LARGE_DRAIN:
            trim()
            later = threading.Timer(1.0, _release)
            later.daemon = True
            later.start()
        return out

    def _compact(self) -> None:
        """The refs drained (lock held): rebuild the tables that grew with them."""
        shrink_dict(self.counts)
        shrink_dict(self.values)
        shrink_set(self.expect)
        shrink_dict(self.waiters)

    def on_value(self, msg: ObjectValue) -> None:
        oid = msg.object_id
        with self.lock:
            self.expect.discard(oid)
            if oid not in self.counts:
                return
            if oid in self.values:
                self.duplicates += 1
            self.values[oid] = msg
            callbacks = self.waiters.pop(oid, None)
        for cb in callbacks or ():
            cb(oid)

    def on_closed(self, exc: BaseException) -> None:
        with self.lock:
            self.closed = exc
            waiters, self.waiters = self.waiters, {}
            held, self.reservations = self.reservations, {}
        for oid, callbacks in waiters.items():
            for cb in callbacks:
                cb(oid)
        for notify in held.values():  # the scheduler releases what this connection held
            notify("released", "", f"the connection to the scheduler ended ({exc})")

    # ---- waiting ----------------------------------------------------------------------------
    def watch(self, ids: Iterable[int], cb: Callable[[int], None]) -> list[int]:
        """Call cb(id) once each id's value is here; returns the ids already here (cb is not
        called for those). Asks for values nobody will push."""
        ready: list[int] = []
        subscribe: list[int] = []
        with self.lock:
            if self.closed is not None:
                return list(ids)
            for oid in ids:
                if oid in self.values:
                    ready.append(oid)
                    continue
                if oid not in self.counts:  # a ref made before a reconnect: adopt it
                    self.counts[oid] = 1
                    self._adds.append(oid)
                self.waiters.setdefault(oid, []).append(cb)
                if oid not in self.expect:
                    self.expect.add(oid)
                    subscribe.append(oid)
            if subscribe:
                self._outbox.append(Subscribe(subscribe))
        if subscribe:
            self.flush_soon()
        return ready

    def unwatch(self, ids: Iterable[int], cb: Callable[[int], None]) -> None:
        with self.lock:
            for oid in ids:
                callbacks = self.waiters.get(oid)
                if callbacks and cb in callbacks:
                    callbacks.remove(cb)
                    if not callbacks:
                        del self.waiters[oid]

    def value(self, oid: int) -> Any:
        """The value of an id whose value is here; raises the task's error."""
        with self.lock:
            msg = self.values.get(oid)
            closed = self.closed
        if msg is None:
            if closed is not None:
                raise self.ended()
            raise QsrvError(f"object {oid:#x} is not available here")
        if msg.status != OK and msg.status != STORED:
            raise_error(msg)
        return self.load(msg)
