"""The scheduler under bursts, without sockets: liveness judged on its own awake time, status
counts kept as tasks move (no scan), memory given back after a drain, and the IO layer's
slicing of a burst so other connections are served between slices."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from qsrv._memory import Peak, shrink_dict, shrink_set
from qsrv._resources import normalize_target
from qsrv.protocol import (
    Cancel,
    Heartbeat,
    ObjectsCopied,
    RefUpdate,
    StatusReply,
    StatusRequest,
    SubmitTask,
    Subscribe,
    TaskDone,
    TaskReturned,
)
from qsrv.scheduler._events import Close, Connected, ReceivedBatch, Send, Tick
from qsrv.scheduler._server import SLICE, SchedulerServer, cut, weight
from qsrv.scheduler._state import SchedulerState
from tests.unit.test_scheduler_state import Harness, runs


@pytest.fixture
def h() -> Harness:
    return Harness()


def submit_many(h: Harness, conn: int, n: int, target: dict[str, float]) -> list[int]:
    """``n`` submits in frames of SLICE messages, as the server hands them over."""
    shape = normalize_target(target)
    ids = [h.oid(conn) for _ in range(n)]
    for i in range(0, n, SLICE):
        h.s.handle(ReceivedBatch(conn, [
            SubmitTask(tid, b"f" * 16, b"args", (), [], shape, 0, 0.0, False, "t")
            for tid in ids[i : i + SLICE]]))
    return ids


# ---- liveness: the scheduler's own stalls do not count against a worker ------------------------
def test_a_stalled_scheduler_keeps_its_workers(h: Harness) -> None:
    w, _ = h.worker(cpus=1)
    # The loop was stalled for 9 of the 10 s since the last tick: the worker's heartbeats
    # waited unread in the socket.
    out = h.s.handle(Tick(110.0, stalled=9.0, lag=9.0))
    assert w in h.s.workers and not any("no heartbeat" in str(a) for a in out)
    h.send(h.worker_conn[w], Heartbeat(0.0))  # read once the loop runs again
    h.s.handle(Tick(114.0))
    assert w in h.s.workers


def test_a_silent_worker_goes_after_the_timeout_of_awake_time(h: Harness) -> None:
    w, _ = h.worker(cpus=1)
    h.s.handle(Tick(110.0, stalled=8.0))  # 2 s awake
    h.s.handle(Tick(112.5))  # 4.5 s awake
    assert w in h.s.workers
    h.s.handle(Tick(113.0))  # 5.0 s
    h.s.handle(Tick(113.5))  # 5.5 s awake without a word
    assert w not in h.s.workers


def test_loop_lag_is_in_the_status(h: Harness) -> None:
    h.s.handle(Tick(100.25, stalled=0.02, lag=0.015))
    h.s.handle(Tick(100.5, stalled=0.2, lag=0.12))
    lag = h.s.status()["scheduler"]
    assert lag["loop_lag_ms"]["last"] == 120.0
    assert lag["loop_lag_ms"]["max"] == 120.0
    assert lag["stalled_total_s"] == pytest.approx(0.22)
    assert 0 < lag["stalled_fraction"] < 1


# ---- status: counts without a scan --------------------------------------------------------------
def test_status_counts_follow_every_move(h: Harness) -> None:
    _, (ex,) = h.worker(cpus=1)
    d = h.driver()
    running, _ = h.submit(d)
    queued = [h.submit(d)[0] for _ in range(3)]
    infeasible = [h.submit(d, {"qpu": 1})[0] for _ in range(2)]
    waiting, _ = h.submit(d, deps=[queued[0]])
    assert h.s.status()["tasks"] == {"waiting": 1, "queued": 3, "running": 1, "infeasible": 2}
    h.send(d, Cancel(infeasible[0]))
    h.send(d, Cancel(queued[1]))
    assert h.s.status()["tasks"] == {"waiting": 1, "queued": 2, "running": 1, "infeasible": 1}
    out = h.send(ex, TaskDone(running, 0, b"", (), [], False, 1.0))  # long: none sent ahead
    assert runs(out) == [(ex, queued[0])]
    status = h.s.status()
    assert status["tasks"] == {"waiting": 1, "queued": 1, "running": 1, "infeasible": 1}
    assert status["infeasible"][0]["count"] == 1
    # values: the finished task and the two cancelled ones, which the driver still holds
    assert status["objects"] == 3
    assert waiting in h.s.objects


def test_status_does_not_walk_the_tasks(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.worker(cpus=1)
    d = h.driver()
    submit_many(h, d, 3000, {"qpu": 1})

    class NoWalk(dict[int, Any]):
        def values(self) -> Any:
            raise AssertionError("status walked the directory")

        def items(self) -> Any:
            raise AssertionError("status walked the directory")

        def __iter__(self) -> Any:
            raise AssertionError("status walked the directory")

    monkeypatch.setattr(h.s.directory, "objects", NoWalk(h.s.directory.objects))
    state = h.s
    reply = SchedulerState.handle(state, ReceivedBatch(d, [StatusRequest(7)]))
    (send,) = reply
    assert isinstance(send, Send) and isinstance(send.msg, StatusReply)
    assert send.msg.status["tasks"]["infeasible"] == 3000


def test_infeasible_targets_listed_largest_first_and_capped(h: Harness) -> None:
    h.worker(cpus=1)
    d = h.driver()
    for n in range(1, 106):  # 105 distinct targets nobody offers, n tasks of the n-th
        for _ in range(n % 7 + 1):
            h.submit(d, {"qpu": n})
    status = h.s.status()
    counts = [item["count"] for item in status["infeasible"]]
    assert len(counts) == 100 and counts == sorted(counts, reverse=True)
    assert status["infeasible_more"] == 5


# ---- memory after a drain -----------------------------------------------------------------------
def test_tables_shrink_after_a_drain() -> None:
    h = Harness()
    h.s.validate_state = lambda: None  # type: ignore[method-assign]  # 60k tasks: skip the walk
    h.worker(cpus=1)
    d = h.driver()
    ids = submit_many(h, d, 60_000, {"qpu": 1})
    client = h.s.clients[d]
    big = (sys.getsizeof(h.s.directory.objects), sys.getsizeof(client.holds),
           sys.getsizeof(client.tasks))
    for i in range(0, len(ids), SLICE):
        h.s.handle(ReceivedBatch(d, [Cancel(t) for t in ids[i : i + SLICE]]))
        h.s.handle(ReceivedBatch(d, [RefUpdate([], ids[i : i + SLICE])]))
    assert len(h.s.directory.objects) == 0
    h.s.handle(Tick(101.0))
    small = (sys.getsizeof(h.s.directory.objects), sys.getsizeof(client.holds),
             sys.getsizeof(client.tasks))
    assert all(s * 50 < b for s, b in zip(small, big, strict=True)), (big, small)
    assert h.s.compactions == 1


def test_a_queue_of_cancelled_tasks_is_rebuilt(h: Harness) -> None:
    h.s.validate_state = lambda: None  # type: ignore[method-assign]  # 10k tasks: skip the walk
    h.worker(cpus=1)
    d = h.driver()
    ids = submit_many(h, d, 10_000, {"qpu": 1})
    for i in range(1, len(ids), SLICE):  # the head stays: dispatch never pops behind it
        h.s.handle(ReceivedBatch(d, [Cancel(t) for t in ids[i : i + SLICE]]))
    (shape,) = [s for s in h.s.dispatcher.shapes.values() if s.queue]
    assert len(shape.queue) == 10_000
    h.s.handle(Tick(101.0))
    assert list(shape.queue) == [h.s.objects[ids[0]]]


def test_peak_and_shrinking_helpers() -> None:
    peak = Peak(floor=100, fraction=4)
    assert [peak.drained(n) for n in (50, 120, 60, 30, 29, 3)] == [0, 0, 0, 120, 0, 0]
    d = {i: i for i in range(10_000)}
    s = set(range(10_000))
    for i in range(9_990):
        del d[i]
        s.discard(i)
    before = sys.getsizeof(d), sys.getsizeof(s)
    shrink_dict(d)
    shrink_set(s)
    assert d == {i: i for i in range(9_990, 10_000)} and s == set(range(9_990, 10_000))
    assert sys.getsizeof(d) * 20 < before[0] and sys.getsizeof(s) * 20 < before[1]


# ---- the IO layer: a burst in slices, others served between them --------------------------------
def test_weight_and_cut_of_long_id_lists() -> None:
    big = RefUpdate(list(range(2500)), list(range(5000, 5100)))
    assert weight([big, Cancel(1)]) == 2 + 2600
    parts = cut(big, 1000)
    assert [(len(p.add), len(p.drop)) for p in parts] == [(1000, 0), (1000, 0), (500, 0),
                                                          (0, 100)]
    assert cut(Subscribe(list(range(2001))), 1000)[-1] == Subscribe([2000])
    assert [len(p.ids) for p in cut(ObjectsCopied(list(range(1500))), 1000)] == [1000, 500]
    assert [len(p.task_ids) for p in cut(TaskReturned(list(range(1001))), 1000)] == [1000, 1]
    assert cut(Cancel(3)) == [Cancel(3)]


class FakeTransport:
    def __init__(self) -> None:
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class FakeProto:
    closed = False
    pending = False
    conn = SimpleNamespace(credential=None, role="driver")

    def __init__(self, conn: int) -> None:
        self.id = conn
        self.transport = FakeTransport()
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)

    def close(self, reason: str, level: int = 0) -> None:
        self.closed = True


def test_a_burst_is_handled_in_slices_and_others_go_between() -> None:
    async def scenario() -> None:
        server = SchedulerServer(token="t")
        handled: list[tuple[int, int]] = []  # (conn, messages) per batch handled
        real = server.state.handle

        def spy(event: Any) -> list[Any]:
            if isinstance(event, ReceivedBatch):
                handled.append((event.conn, len(event.msgs)))
            return real(event)

        server.state.handle = spy  # type: ignore[method-assign]
        busy, quiet = FakeProto(1), FakeProto(2)
        for proto in (busy, quiet):
            server.protocols[proto.id] = proto  # type: ignore[assignment]
            server.state.handle(Connected(proto.id, "driver", proto.id))
        server._on_messages(busy, [Cancel(i) for i in range(5 * SLICE + 3)])  # type: ignore[arg-type]
        assert busy.transport.paused and handled == []
        await asyncio.sleep(0)  # one turn: one slice
        assert handled == [(1, SLICE)]
        server._on_messages(quiet, [StatusRequest(1)])  # type: ignore[arg-type]
        assert handled[-1] == (2, 1)  # at once, not behind the burst
        while busy.transport.paused:
            await asyncio.sleep(0)
        assert [n for c, n in handled if c == 1] == [SLICE] * 5 + [3]
        assert server.backlog() == 0

    asyncio.run(scenario())


def test_connections_with_backlogs_take_turns_and_close_after_their_backlog() -> None:
    async def scenario() -> None:
        server = SchedulerServer(token="t")
        handled: list[int] = []
        real = server.state.handle

        def spy(event: Any) -> list[Any]:
            if isinstance(event, ReceivedBatch):
                handled.append(event.conn)
            return real(event)

        server.state.handle = spy  # type: ignore[method-assign]
        a, b = FakeProto(1), FakeProto(2)
        for conn in (1, 2):
            server.state.handle(Connected(conn, "driver", conn))
        server.protocols[1] = a  # type: ignore[assignment]
        server.protocols[2] = b  # type: ignore[assignment]
        server._on_messages(a, [Cancel(i) for i in range(3 * SLICE)])  # type: ignore[arg-type]
        server._on_messages(b, [RefUpdate([], list(range(3 * SLICE)))])  # type: ignore[arg-type]
        server._on_close(a, "peer closed")  # type: ignore[arg-type]
        assert 1 in server.protocols  # not gone before what it sent is handled
        while server.backlog():
            await asyncio.sleep(0)
        assert handled == [1, 2, 1, 2, 1, 2]
        assert 1 not in server.protocols and 2 in server.protocols
        assert not b.transport.paused

    asyncio.run(scenario())


def test_a_connection_the_scheduler_closes_mid_burst_loses_its_backlog() -> None:
    async def scenario() -> None:
        server = SchedulerServer(token="t")
        a, b = FakeProto(1), FakeProto(2)
        server.protocols[1] = a  # type: ignore[assignment]
        server.protocols[2] = b  # type: ignore[assignment]
        server.state.handle(Connected(2, "driver", 2))  # 1 is unknown: its first message
        server._on_messages(a, [Cancel(i) for i in range(3 * SLICE)])  # type: ignore[arg-type]
        server._on_messages(b, [Cancel(i) for i in range(3 * SLICE)])  # type: ignore[arg-type]
        while server.backlog():
            await asyncio.sleep(0)
        assert a.closed and not b.closed and not b.transport.paused
        assert server._turns == deque() and 1 not in server._backlog
        server._apply([Close(2, "test")])
        assert b.closed

    asyncio.run(scenario())


def test_full_collections_run_on_the_servers_schedule() -> None:
    import gc

    from qsrv.scheduler._server import GC_INTERVAL, FullCollections

    before = gc.get_threshold()
    full = FullCollections()
    full.take_over()
    try:
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] >= 2**30
        runs = gc.get_stats()[2]["collections"]
        full.run(100.0)
        full.maybe(100.0 + GC_INTERVAL / 2)  # not due yet
        assert gc.get_stats()[2]["collections"] == runs + 1
    finally:
        full.give_back()
    assert gc.get_threshold() == before
