"""The placement index: it picks what the scan over every worker picked (the node holding the
arguments, then the least loaded, ties to the lowest id; a worker that needs an executor; GPUs;
the executor with the fewest tasks sent ahead), and choosing walks no list of workers. No
sockets: the scheduler's state machine, driven by events, `validate_state()` after each."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from qsrv._resources import SCALE
from qsrv.protocol import (
    OK,
    STORED,
    Cancel,
    PutObject,
    RegisterExecutor,
    RegisterFunction,
    SpawnExecutor,
    SubmitTask,
    TaskBlocked,
    TaskDone,
    TaskUnblocked,
    encode_location,
)
from qsrv.scheduler import _placement
from qsrv.scheduler._dispatch import Dispatcher
from qsrv.scheduler._events import Disconnected, Send
from qsrv.scheduler._placement import Executor, PlacementIndex, Shape, Worker, choose_worker

from .test_scheduler_state import Harness, runs


def scan_ahead(d: Dispatcher, shape: Shape) -> Executor | None:
    """The scan `_send_ahead` made before the index: over every executor of every worker."""
    best: Executor | None = None
    for w in d._workers.values():
        for ex in w.executors.values():
            running = ex.task
            if (running is not None and running.shape is shape and not running.blocked
                    and ex.short and len(ex.queue) < d.prefetch
                    and (best is None or len(ex.queue) < len(best.queue))):
                best = ex
    return best


class Compared:
    """Wraps the index of a harness: every choice is checked against the scan."""

    def __init__(self, h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        self.choices = self.ahead_choices = 0
        index = h.s.dispatcher.index
        choose, choose_ahead = index.choose, index.choose_ahead

        def checked_choose(shape: Shape, prefer: int = 0,
                           active: Any = None) -> tuple[Worker | None, Worker | None]:
            expected = choose_worker(shape, list(h.s.workers.values()), prefer)
            got = choose(shape, prefer, active)
            if expected[0] is not None:  # the second is used only when there is no first
                expected = expected[0], None
            assert got == expected, (shape.need, prefer, got, expected)
            self.choices += 1
            return got

        def checked_ahead(shape: Shape) -> Executor | None:
            expected = scan_ahead(h.s.dispatcher, shape)
            got = choose_ahead(shape)
            assert got is expected, (shape.need, got, expected)
            self.ahead_choices += 1
            return got

        monkeypatch.setattr(index, "choose", checked_choose)
        monkeypatch.setattr(index, "choose_ahead", checked_ahead)


@pytest.fixture
def h() -> Harness:
    return Harness()


def fast(h: Harness, d: int) -> None:
    """Teach the scheduler that the harness's function is short (so tasks are sent ahead)."""
    h.s.dispatcher.fn_time[b"f" * 16] = 0.001


# ---- what is picked ------------------------------------------------------------------------
def test_least_loaded_then_lowest_id(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Compared(h, monkeypatch)
    a, a_ex = h.worker(cpus=4)
    b, b_ex = h.worker(cpus=4)
    c, c_ex = h.worker(cpus=2)
    d = h.driver()
    placed = [runs(h.submit(d)[1])[0][0] for _ in range(5)]
    # all idle: lowest id; then the least loaded (a 1/4, b 0, c 0 -> b; a 1/4, b 1/4, c 0 -> c;
    # a 1/4, b 1/4, c 1/2 -> a; a 2/4, b 1/4 -> b)
    owner = {ex: w for w, exs in ((a, a_ex), (b, b_ex), (c, c_ex)) for ex in exs}
    assert [owner[ex] for ex in placed] == [a, b, c, a, b]
    assert seen.choices >= 5


def test_holder_of_the_arguments_wins_while_it_has_an_idle_executor(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    Compared(h, monkeypatch)
    a, a_ex = h.worker(cpus=2)
    _b, b_ex = h.worker(cpus=8)
    d = h.driver()
    big = h.oid(d)
    h.send(d, PutObject(big, encode_location(a, 1 << 30, "127.0.0.1:1"), (), [], STORED))
    first = runs(h.submit(d, deps=[big])[1])
    second = runs(h.submit(d, deps=[big])[1])
    assert first[0][0] in a_ex and second[0][0] in a_ex  # a is fuller than b, still preferred
    third = runs(h.submit(d, deps=[big])[1])  # a is full now: the least loaded other
    assert third[0][0] in b_ex


def test_gpus_whole_and_fractional(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    Compared(h, monkeypatch)
    h.worker(cpus=2, gpus=0)
    _g, _g_ex = h.worker(cpus=8, gpus=2, executors=6)
    d = h.driver()
    gpu_ids = []
    for target in [{"gpu": 0.5, "cpu": 0}, {"gpu": 1, "cpu": 0}, {"gpu": 0.5, "cpu": 0},
                   {"gpu": 1, "cpu": 0}]:
        out = h.submit(d, target)[1]
        sent = [a.msg for a in out if isinstance(a, Send) and type(a.msg).__name__ == "RunTask"]
        gpu_ids.append([m.gpu_ids for m in sent])
    assert gpu_ids == [[["0"]], [["1"]], [["0"]], []]  # no whole device is left for the last


def test_a_worker_with_room_but_no_idle_executor_is_asked_for_one(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    Compared(h, monkeypatch)
    h.worker(cpus=1)
    b, _ = h.worker(cpus=4, executors=1)
    _c, _ = h.worker(cpus=4, executors=1)
    d = h.driver()
    for _ in range(3):
        h.submit(d)
    out = h.submit(d)[1]  # a and its one CPU, b's and c's executor are busy: b has room
    spawn = [a for a in out if isinstance(a, Send) and isinstance(a.msg, SpawnExecutor)]
    assert [a.conn for a in spawn] == [h.worker_conn[b]]


def test_tasks_sent_ahead_go_to_the_shortest_queue(h: Harness,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Compared(h, monkeypatch)
    _, (e1,) = h.worker(cpus=1)
    _, (e2,) = h.worker(cpus=1)
    d = h.driver()
    fast(h, d)
    started = [runs(h.submit(d)[1]) for _ in range(6)]
    assert [r[0][0] for r in started] == [e1, e2, e1, e2, e1, e2]
    assert len(h.s.executors[e1].queue) == len(h.s.executors[e2].queue) == 2
    assert runs(h.submit(d)[1]) == []  # both queues are full: it waits
    assert seen.ahead_choices >= 5


def test_a_blocked_task_takes_no_task_ahead(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    Compared(h, monkeypatch)
    _, (e1,) = h.worker(cpus=1, executors=1)
    _, (e2,) = h.worker(cpus=1, executors=1)
    d = h.driver()
    fast(h, d)
    t1 = runs(h.submit(d)[1])[0][1]
    runs(h.submit(d)[1])
    h.send(e1, TaskBlocked(t1))
    # e1 lent its CPU: a new executor is asked for there; the next task goes ahead to e2 only
    nxt = runs(h.submit(d)[1])
    assert nxt and nxt[0][0] == e2
    h.send(e1, TaskUnblocked(t1))
    assert runs(h.submit(d)[1])[0][0] == e1


# ---- the same picks as the scan, whatever happens (QSRV_PLACEMENT_SEEDS=N for more) ---------
SHAPES: list[dict[str, float]] = [
    {"cpu": 1}, {"cpu": 0.5}, {"cpu": 2}, {"gpu": 1, "cpu": 0}, {"gpu": 0.5, "cpu": 1},
    {"qpu": 1, "cpu": 0.25}, {"cpu": 1, "nothing": 1},
]


@pytest.mark.parametrize("seed", range(int(os.environ.get("QSRV_PLACEMENT_SEEDS", "6"))))
def test_random_events_pick_as_the_scan_does(seed: int, h: Harness,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    seen = Compared(h, monkeypatch)
    h.s.dispatcher.index.max_shapes = 3  # shapes also leave the index and come back
    d = h.driver()
    fast(h, d)
    workers: list[int] = []
    stored: list[int] = []
    for _ in range(3):
        workers.append(h.worker(cpus=rng.choice([1, 2, 4]), gpus=rng.choice([0, 1, 2]),
                                qpu=rng.choice([0, 1]))[0])
    for _ in range(400):
        op = rng.random()
        execs = list(h.s.executors.values())
        if op < 0.35:
            deps = [rng.choice(stored)] if stored and rng.random() < 0.3 else []
            h.submit(d, rng.choice(SHAPES), deps=deps)
        elif op < 0.6:
            busy = [ex for ex in execs if ex.task is not None and not ex.task.blocked]
            if busy:
                ex = rng.choice(busy)
                assert ex.task is not None
                h.send(ex.conn, TaskDone(ex.task.id, OK, b"", (), [], False,
                                         0.5 if rng.random() < 0.03 else 0.001))
        elif op < 0.67:
            running = [ex for ex in execs if ex.task is not None]
            if running:
                ex = rng.choice(running)
                assert ex.task is not None
                h.send(ex.conn, (TaskUnblocked if ex.task.blocked else TaskBlocked)(ex.task.id))
        elif op < 0.75 and h.s.workers:
            h.executor(rng.choice(list(h.s.workers)))
        elif op < 0.8 and execs:
            h.s.handle(Disconnected(rng.choice(execs).conn, "killed"))
        elif op < 0.84:
            workers.append(h.worker(cpus=rng.choice([0.5, 1, 3]), gpus=rng.choice([0, 1]),
                                    qpu=rng.choice([0, 1]), executors=rng.choice([0, 1, 2]))[0])
        elif op < 0.87 and len(h.s.workers) > 1:
            h.s.handle(Disconnected(h.worker_conn[rng.choice(list(h.s.workers))], "gone"))
        elif op < 0.92 and h.s.workers:
            oid = h.oid(d)
            wid = rng.choice(list(h.s.workers))
            h.send(d, PutObject(oid, encode_location(wid, rng.randrange(1, 1 << 20), "h:1"),
                                (), [], STORED))
            stored.append(oid)
        else:
            queued = [t for t in h.s.objects.values() if type(t).__name__ == "Task"]
            if queued:
                h.send(d, Cancel(rng.choice(queued).id))
    assert seen.choices > 50


# ---- what choosing costs ---------------------------------------------------------------------
class NoScan(dict[int, Worker]):
    """Workers by id that refuse to be walked (looking one up is fine)."""

    def _walk(self, *args: Any) -> Any:
        raise AssertionError("walked every worker")

    __iter__ = keys = values = items = _walk  # type: ignore[assignment]


def test_choosing_walks_no_list_of_workers(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(200):
        h.worker(cpus=1, executors=0)  # room, but no executor: never where a task can go
    _, (e1,) = h.worker(cpus=1)
    _, (_e2,) = h.worker(cpus=1)
    d = h.driver()
    fast(h, d)
    h.submit(d)  # the shape is indexed: one walk, once
    h.send(e1, TaskDone(next(iter(h.s.objects)), OK, b"", (), [], False, 0.001))
    visits = 0
    fits_now = Worker.fits_now

    def counted(self: Worker, shape: Shape) -> bool:
        nonlocal visits
        visits += 1
        return fits_now(self, shape)

    d2 = h.s.dispatcher
    with monkeypatch.context() as m:
        m.setattr(Worker, "fits_now", counted)
        m.setattr(d2, "_workers", NoScan(d2._workers))
        m.setattr(d2.index, "_workers", NoScan(d2.index._workers))
        m.setattr(h.s, "validate_state", lambda: None)  # it walks everything, by design
        for _ in range(50):
            tid, out = h.submit(d)
            ((ex, _),) = runs(out)
            h.send(ex, TaskDone(tid, OK, b"", (), [], False, 0.001))
        burst = [h.submit(d)[0] for _ in range(40)]  # sent ahead, and waiting
        for _ in range(200):
            running = [x for x in h.s.executors.values() if x.task is not None]
            if not running:
                break
            x = running[0]
            assert x.task is not None
            h.send(x.conn, TaskDone(x.task.id, OK, b"", (), [], False, 0.001))
    assert all(t not in h.s.objects or type(h.s.objects[t]).__name__ != "Task" for t in burst)
    # a fit check per indexed shape when a worker's room changes: a few per task, not 200
    assert visits <= 4 * 90
    h.s.validate_state()


def test_the_index_keeps_a_bounded_number_of_shapes(h: Harness) -> None:
    h.worker(cpus=64, executors=2)
    d = h.driver()
    index: PlacementIndex = h.s.dispatcher.index
    index.max_shapes = 4
    for i in range(20):
        tid, out = h.submit(d, {"cpu": 0.01 * (i + 1)})
        ((ex, _),) = runs(out)
        h.send(ex, TaskDone(tid, OK, b"", (), [], False, 0.5))
    assert len(index.shapes) <= 4
    assert sum(s.indexed for s in h.s.dispatcher.shapes.values()) == len(index.shapes)


def test_validate_state_notices_a_stale_index(h: Harness) -> None:
    from qsrv.scheduler._lifecycle import InvariantError

    w, _ = h.worker(cpus=2)
    d = h.driver()
    fast(h, d)
    h.submit(d)
    shape = next(iter(h.s.dispatcher.index.shapes.values()))
    key = shape.idle.pop(w)
    with pytest.raises(InvariantError, match="idle executor"):
        h.s.validate_state()
    shape.idle[w] = key
    ex = next(iter(h.s.executors.values()))
    h.s.dispatcher.index.ahead(ex)
    h.s.validate_state()
    shape.ahead.clear()
    with pytest.raises(InvariantError, match="sent ahead"):
        h.s.validate_state()


def test_an_executor_registering_late_is_found(h: Harness,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    Compared(h, monkeypatch)
    w, _ = h.worker(cpus=2, executors=0)
    d = h.driver()
    tid, out = h.submit(d)
    assert any(isinstance(a, Send) and isinstance(a.msg, SpawnExecutor) for a in out)
    conn = h.connect("executor")
    out = h.send(conn, RegisterExecutor(w, 4242))
    assert runs(out) == [(conn, tid)]


def test_placement_module_scan_is_still_the_reference() -> None:
    assert _placement.choose_worker is choose_worker


@pytest.mark.parametrize(("took", "ahead"), [(0.00002, 32), (0.0005, 4), (0.001, 2),
                                             (0.005, 1)])
def test_tasks_sent_ahead_hold_about_two_milliseconds_of_work(h: Harness, took: float,
                                                              ahead: int) -> None:
    _, (ex,) = h.worker(cpus=1)
    d = h.driver()
    h.s.dispatcher.fn_time[b"f" * 16] = took
    for _ in range(40):
        h.submit(d)
    assert len(h.s.executors[ex].queue) == ahead  # at most `prefetch` (32)


def test_short_tasks_do_not_wait_behind_a_long_one_of_the_same_shape(h: Harness) -> None:
    _, (slow_ex,) = h.worker(cpus=1)
    _, (fast_ex,) = h.worker(cpus=1)
    d = h.driver()
    h.send(d, RegisterFunction(b"g" * 16, b"slow"))
    slow = h.oid(d)
    h.send(d, SubmitTask(slow, b"g" * 16, b"", (), [], {"cpu": SCALE}, 0, 0.0, False, "slow"))
    assert h.s.objects[slow].executor.conn == slow_ex  # type: ignore[union-attr]
    h.s.dispatcher.fn_time[b"f" * 16] = 0.00002
    runs(h.submit(d)[1])  # on the other executor
    for _ in range(5):
        h.submit(d)
    assert len(h.s.executors[slow_ex].queue) == 0  # nothing waits behind the slow task
    assert len(h.s.executors[fast_ex].queue) == 5
