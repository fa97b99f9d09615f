"""What monitors (dashboards, `qsrv timeline`) see of the scheduler, at a bounded cost.

A monitor is a connection of role ``monitor``, authenticated with the cluster token like any
other (a scoped credential never gets it: see qsrv.protocol). It is not a client of the state
machine: it cannot submit, read a value, hold a ref or register. It may only send
`MonitorRequest`; anything else closes it.

What is kept, always, whoever watches (so a timeline covers the recent past):

- **task events**, one per task run: ``[end, elapsed, task id, function name, worker id,
  executor pid, ok]`` (``end`` in epoch seconds, when the scheduler read the result; ``elapsed``
  the seconds the function ran, as its executor measured). In a ring of `capacity` events;
  above `max_rate` messages a second, the runs of one task id in 2**k are observed (task
  ids are sequential): kept as events, and counted in the seconds run and the histograms
  weighing 2**k (``sampled_out`` counts the runs not kept); the task counts stay exact.
- **counters by function** (submitted, done, failed: exact; seconds run and longest run:
  of the runs observed, see below) for at most
  `MAX_FUNCTIONS` names (the others count under ``"(other)"``; totals are their sums),
  histograms of run time and of queue wait (submission to start: the submission time is
  kept on the task).
- **failures**, the last `MAX_FAILURES` of them: ``[at, task id, function, worker id,
  executor pid, error, kind, reason]``. A task's own error comes as its executor encoded it
  (cut to `MAX_ERROR` bytes; the scheduler never opens it: a monitor reads the text), kind
  ``"error"`` (``"retried"`` when the task runs again). Failures the scheduler decides come
  from the directory (`SchedulerState.directory.failed`) with the kind and message of their
  system error (``cancelled``, ``timeout``, ``worker_died``, ``reservation``, ``lost``...),
  or kind ``"dependency"`` when an argument failed (the argument's error then comes along).
  Counted by kind (at most `MAX_KINDS` kinds).
- **transfers**: copies of stored values pulled between nodes (the agents' ObjectsCopied),
  count and bytes by receiving worker (at most `MAX_NODES` of them).

Tasks are recorded by the state machine as it handles them (the monitor is its `recorder`:
`submitted()`, `ran()`, with the task and executor it already looked up: no lookup of its
own, a few list operations per task). `observe()`, called by the IO layer with each batch of
messages read, takes the batch's time, counts transfers and takes out task output.
``QSRV_MONITOR_RATE`` sets `max_rate` (messages a second observed in full; default 2,000).
``QSRV_MONITOR=0`` in the scheduler's environment turns the recording off (monitors then see
the status only; what it costs is measured by benchmarks/bench_dashboard.py).

Updates go out on the ticker, to each watching monitor at its own interval, at most
`MAX_EVENTS_PER_UPDATE` events each.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qsrv.errors import ProtocolError
from qsrv.protocol import (
    OK,
    STORED,
    SYSTEM_ERROR,
    TASK_ERROR,
    FollowOutput,
    MonitorRequest,
    MonitorUpdate,
    ObjectsCopied,
    TaskDone,
    TaskOutput,
    decode_system_error,
)
from qsrv.scheduler._records import Obj, Task

if TYPE_CHECKING:
    from qsrv.scheduler._placement import Executor
    from qsrv.scheduler._state import SchedulerState
    from qsrv.transport import FramedProtocol

__all__ = ["BUCKETS", "Monitor"]

log = logging.getLogger("qsrv.scheduler")

MAX_FUNCTIONS = 1000
MAX_FAILURES = 100
MAX_ERROR = 16_384
MAX_REASON = 1024  # characters of a failure's reason
MAX_KINDS = 32  # failure kinds counted (the others under OTHER)
MAX_NODES = 4096  # workers whose transfers are counted (the others under worker 0)
MAX_OUTPUT = 65_536  # characters of one TaskOutput forwarded, at most
MAX_EVENTS_PER_UPDATE = 1000  # a followed update's newest events (a snapshot: the whole ring)
MIN_FOLLOW = 0.1
DEFAULT_RATE = 2_000.0  # messages a second whose tasks' runs are all observed
MAX_WATCHES = 4  # followed requests of one monitor connection
OTHER = "(other)"
# Upper bounds (seconds) of the run-time and queue-wait histograms; the last bucket is +Inf.
BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)


def _rate_from_env(default: float) -> float:
    text = os.environ.get("QSRV_MONITOR_RATE", "").strip()
    if not text:
        return default
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not rate > 0:
        log.warning("QSRV_MONITOR_RATE=%r is not a positive number: using %g", text, default)
        return default
    return rate


class _Watch:
    __slots__ = ("cursor", "fail_cursor", "interval", "next", "proto", "req_id")

    def __init__(self, proto: FramedProtocol, req_id: int, interval: float,
                 cursor: int, fail_cursor: int, now: float) -> None:
        self.proto = proto
        self.req_id = req_id
        self.interval = interval
        self.cursor = cursor
        self.fail_cursor = fail_cursor
        self.next = now + interval


class Monitor:
    def __init__(self, state: SchedulerState, *, capacity: int = 20_000,
                 max_rate: float | None = None,
                 send: Callable[[int, Any], None] = lambda conn, msg: None) -> None:
        self.state = state
        self._send_to = send  # (connection, message): what the IO layer sends
        self.followers: set[int] = set()  # drivers that follow their tasks' output
        self.capacity = capacity
        self.max_rate = max_rate if max_rate is not None else _rate_from_env(DEFAULT_RATE)
        self.events: deque[tuple[float, float, int, str, int, int, bool]] = deque(
            maxlen=capacity)
        self.seq = 0  # events ever kept; the ring holds the last len(events) of them
        self.failures: deque[tuple[float, int, str, int, int, bytes, str, str]] = deque(
            maxlen=MAX_FAILURES)
        self.fail_seq = 0
        self.failure_kinds: dict[str, int] = {}
        self.transfers: dict[int, list[int]] = {}  # receiving worker id -> [count, bytes]
        self.functions: dict[str, list[float]] = {}  # name -> [submitted, done, failed, s, max]
        self.run_hist = [0] * (len(BUCKETS) + 1)
        self.wait_hist = [0] * (len(BUCKETS) + 1)
        self.wait_sum = 0.0
        self.decided = 0  # failures the scheduler decided (counted as failed, never ran)
        self._now = time.time()  # when the batch being handled was read
        self._window = 0.0
        self._in_window = 0  # messages read in this one-second window
        self._mask = 0  # runs of task ids with none of these bits set are observed
        self.watches: list[_Watch] = []
        self.monitors: set[FramedProtocol] = set()
        self.started = time.time()
        self.recording = os.environ.get("QSRV_MONITOR", "1").strip() != "0"
        if not self.recording:
            self.observe = self._ignore  # type: ignore[method-assign]  # output still goes
        else:
            state.recorder = self
            state.directory.failed = self._failed

    # ---- observing -----------------------------------------------------------------------
    @property
    def sampled_out(self) -> int:
        """Runs not kept as events (sampled out above the rate)."""
        runs = sum(e[1] + e[2] for e in self.functions.values())
        return int(runs - self.decided + self.failure_kinds.get("retried", 0) - self.seq)

    def _function(self, name: str) -> list[float]:
        entry = self.functions.get(name)
        if entry is None:
            if len(self.functions) >= MAX_FUNCTIONS:
                name = OTHER
                entry = self.functions.get(name)
            if entry is None:
                entry = self.functions[name] = [0, 0, 0, 0.0, 0.0]
        return entry

    def _ignore(self, conn: int, messages: list[Any]) -> list[Any]:
        for msg in messages:
            if type(msg) is TaskOutput or type(msg) is FollowOutput:
                return self._output(conn, messages)
        return messages

    def observe(self, conn: int, messages: list[Any]) -> list[Any]:
        """A batch of messages from connection ``conn``, about to be handled; returns what
        the state machine is to handle (task output and follow requests are taken out)."""
        now = self._now = time.time()
        if now - self._window >= 1.0:
            self._window, self._in_window = now, 0
        n = self._in_window = self._in_window + len(messages)
        if n > self.max_rate:  # observe the runs of one task id in 2**k (ids are sequential)
            self._mask = (1 << int(n // self.max_rate).bit_length()) - 1
        elif self._mask:
            self._mask = 0
        output = False
        for msg in messages:
            t = type(msg)
            if t is ObjectsCopied:
                self._copied(conn, msg)
            elif t is TaskOutput or t is FollowOutput:
                output = True
        return self._output(conn, messages) if output else messages

    @property
    def tasks_submitted(self) -> int:
        return int(sum(e[0] for e in self.functions.values()))

    @property
    def done(self) -> int:
        return int(sum(e[1] for e in self.functions.values()))

    @property
    def failed(self) -> int:
        return int(sum(e[2] for e in self.functions.values()))

    # ---- task output (log_to_driver) -----------------------------------------------------
    def _output(self, conn: int, messages: list[Any]) -> list[Any]:
        """Forward what executors' tasks printed to the owners that follow it; note who
        follows. Neither reaches the state machine."""
        rest = []
        state = self.state
        for msg in messages:
            t = type(msg)
            if t is TaskOutput:
                ex = state.dispatcher.executors.get(conn)
                task = state.directory.objects.get(msg.task_id)
                if ex is None or type(task) is not Task or task.owner not in self.followers:
                    continue  # only executors report output; nobody follows this one
                self._send_to(task.owner, TaskOutput(msg.task_id, msg.stream[:16],
                                                     msg.text[:MAX_OUTPUT], ex.worker.id,
                                                     ex.pid))
            elif t is FollowOutput:
                client = state.clients.get(conn)
                if client is not None and client.role == "driver":
                    if msg.on:
                        self.followers.add(conn)
                    else:
                        self.followers.discard(conn)
            else:
                rest.append(msg)
        return rest

    # ---- recording (called by the state machine) --------------------------------------
    def submitted(self, task: Task) -> None:
        entry = self.functions.get(task.name)
        if entry is None:
            entry = self._function(task.name)
        entry[0] += 1
        task.stats = entry
        task.submitted = self._now

    def ran(self, ex: Executor, task: Task, msg: TaskDone) -> None:
        """``ex`` reports the run of ``task`` (RUNNING until now). Tasks done and failed by
        function are counted exactly; above `max_rate` messages a second (in this window)
        the runs of one task id in 2**k are observed (seconds run and histograms weighing
        2**k, the longest run, kept as events), below it every run."""
        entry = task.stats
        if entry is None:  # submitted before recording began
            entry = task.stats = self._function(task.name)
        status = msg.status
        if status == OK or status == STORED:  # noqa: SIM109 (the common case first)
            entry[1] += 1
        else:
            self._error(ex, task, msg, entry)
        mask = self._mask
        if task.id & mask:
            return  # not observed: counted in sampled_out (runs - events kept)
        weight = mask + 1
        elapsed = msg.elapsed
        entry[3] += elapsed * weight
        if elapsed > entry[4]:
            entry[4] = elapsed
        now = self._now
        self.run_hist[bisect_left(BUCKETS, elapsed)] += weight
        submitted = task.submitted
        if submitted:
            wait = now - elapsed - submitted
            if wait < 0.0:
                wait = 0.0
            self.wait_hist[bisect_left(BUCKETS, wait)] += weight
            self.wait_sum += wait * weight
        self.events.append((now, elapsed, task.id, task.name, ex.worker.id, ex.pid,
                            status in (OK, STORED)))
        self.seq += 1

    def _error(self, ex: Executor, task: Task, msg: TaskDone, entry: list[float]) -> None:
        if msg.status == TASK_ERROR and msg.retryable and task.max_retries > 0:
            kind = "retried"  # it runs again: not a failure of the task yet
        else:
            kind = "error"
            entry[2] += 1
        self._failure(self._now, task.id, task.name, ex.worker.id, ex.pid, msg.status,
                      msg.data, kind, "")

    def _failure(self, now: float, task_id: int, name: str, wid: int, pid: int, status: int,
                 data: bytes, kind: str, reason: str) -> None:
        if status == SYSTEM_ERROR:  # msgpack [kind, message], not a pickle: read here
            try:
                sys_kind, message = decode_system_error(data)
            except ProtocolError:
                sys_kind, message = "system", "(malformed system error)"
            if kind in ("error", "retried", ""):
                kind, reason = sys_kind, message
            else:
                reason = f"{reason}: {sys_kind}: {message}"
            data = b""
        kind = kind[:64]
        if kind not in self.failure_kinds and len(self.failure_kinds) >= MAX_KINDS:
            kind = OTHER
        self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1
        self.failures.append((now, task_id, name, wid, pid, data[:MAX_ERROR], kind,
                              reason[:MAX_REASON]))
        self.fail_seq += 1

    def _failed(self, task: Task, status: int, data: bytes, cause: Task | None) -> None:
        """A task failed without its executor's report: the scheduler decided (called by the
        directory as the task finishes)."""
        now = time.time()
        ex = task.executor
        wid = ex.worker.id if ex is not None else 0
        pid = ex.pid if ex is not None else 0
        if cause is not None:
            kind = "dependency"
            reason = f"its argument {cause.name!r} ({cause.id:#x}) failed"
        elif status == SYSTEM_ERROR:
            kind, reason = "", ""
        else:  # an argument that had failed before the task was submitted
            kind, reason = "dependency", "an argument had failed"
        self._function(task.name)[2] += 1
        self.decided += 1
        self._failure(now, task.id, task.name, wid, pid, status, data, kind, reason)

    def _copied(self, conn: int, msg: ObjectsCopied) -> None:
        """A node pulled copies of stored values from others' stores."""
        worker = self.state.worker_by_conn.get(conn)
        if worker is None:
            return
        wid = worker.id
        counts = self.transfers.get(wid)
        if counts is None:
            if len(self.transfers) >= MAX_NODES:
                wid = 0
                counts = self.transfers.get(wid)
            if counts is None:
                counts = self.transfers[wid] = [0, 0]
        objects = self.state.directory.objects
        size = 0
        for oid in msg.ids:
            obj = objects.get(oid)
            if type(obj) is Obj:
                size += obj.size
        counts[0] += len(msg.ids)
        counts[1] += size

    # ---- monitors ------------------------------------------------------------------------
    def serve(self, proto: FramedProtocol) -> None:
        """Accept a monitor's connection: it only ever sends MonitorRequest."""
        proto.accept(0, {"monitor": True})
        proto.on_messages = self._messages
        self.monitors.add(proto)

    def _messages(self, proto: FramedProtocol, messages: list[Any]) -> None:
        for msg in messages:
            if type(msg) is not MonitorRequest:
                proto.close(f"a monitor sent {type(msg).__name__}: monitors only watch",
                            level=logging.INFO)
                self.monitors.discard(proto)
                return
            self._request(proto, msg)

    def _request(self, proto: FramedProtocol, msg: MonitorRequest) -> None:
        since = msg.since if msg.since == msg.since else 0.0  # NaN: everything
        first = self.seq - len(self.events)
        skip = sum(1 for e in self.events if e[0] < since) if since > 0 else 0
        fail_first = self.fail_seq - len(self.failures)
        fail_skip = sum(1 for f in self.failures if f[0] < since) if since > 0 else 0
        watch = _Watch(proto, msg.req_id, max(MIN_FOLLOW, msg.follow), first + skip,
                       fail_first + fail_skip, time.monotonic())
        self._send(watch, limit=self.capacity)
        if msg.follow > 0:  # at most MAX_WATCHES per monitor: a new one replaces the oldest
            mine = [w for w in self.watches if w.proto is proto and w.req_id != msg.req_id]
            drop = {id(w) for w in mine[:max(0, len(mine) - MAX_WATCHES + 1)]}
            self.watches = [w for w in self.watches if id(w) not in drop
                            and not (w.proto is proto and w.req_id == msg.req_id)]
            self.watches.append(watch)

    def tick(self, now: float) -> None:
        """Send each watching monitor its update when due (``now``: monotonic); forget
        followers that left."""
        if self.followers:
            self.followers &= self.state.clients.keys()
        if not self.watches:
            return
        alive = []
        for watch in self.watches:
            if watch.proto.closed:
                self.monitors.discard(watch.proto)
                continue
            alive.append(watch)
            if now >= watch.next:
                watch.next = now + watch.interval
                self._send(watch)
        self.watches = alive

    def _send(self, watch: _Watch, limit: int = MAX_EVENTS_PER_UPDATE) -> None:
        first = self.seq - len(self.events)
        start = max(watch.cursor, first)
        if self.seq - start > limit:
            start = self.seq - limit  # a slow reader gets the newest
        events = [list(e) for e in itertools.islice(self.events, start - first, None)]
        watch.cursor = self.seq
        fail_first = self.fail_seq - len(self.failures)
        fstart = max(watch.fail_cursor, fail_first)
        failures = [list(f) for f in itertools.islice(self.failures, fstart - fail_first, None)]
        watch.fail_cursor = self.fail_seq
        watch.proto.send(MonitorUpdate(watch.req_id, self.update(events, failures)))

    def update(self, events: list[Any], failures: list[Any]) -> dict[str, Any]:
        state = self.state
        submitted = done = failed = 0.0
        run_sum = 0.0
        for entry in self.functions.values():
            submitted += entry[0]
            done += entry[1]
            failed += entry[2]
            run_sum += entry[3]
        awake = state.recovery.awake
        workers: dict[str, Any] = {}
        for w in state.workers.values():
            executors = [[ex.pid, ex.task.name if ex.task is not None else "", len(ex.queue)]
                         for ex in itertools.islice(w.executors.values(), 256)]
            workers[str(w.id)] = {"heartbeat_age": max(0.0, awake - w.last_seen),
                                  "executors": executors}
        return {
            "now": time.time(),
            "started": self.started,
            "status": state.status(),
            "workers": workers,
            "recording": self.recording,
            "totals": {"submitted": int(submitted), "done": int(done), "failed": int(failed),
                       "sampled_out": self.sampled_out, "events_kept": len(self.events),
                       "capacity": self.capacity},
            "functions": {k: list(v) for k, v in self.functions.items()},
            "failure_kinds": dict(self.failure_kinds),
            "transfers": {str(k): list(v) for k, v in self.transfers.items()},
            "histograms": {"buckets": list(BUCKETS), "run": list(self.run_hist),
                           "run_sum": run_sum, "wait": list(self.wait_hist),
                           "wait_sum": self.wait_sum},
            "events": events,
            "failures": failures,
        }

    def close_all(self) -> None:
        for proto in list(self.monitors):
            proto.close("")
        self.monitors.clear()
        self.watches.clear()
