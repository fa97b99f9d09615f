"""Reservations in the scheduler's state machine, with no sockets: capacity held on one worker,
tasks that run only inside it on executors dedicated to it, release (asked, holder gone,
timeout), placement again when its worker dies, infeasible targets. Every invariant is checked
after every event (`CheckedState`)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from qsrv._resources import normalize_target
from qsrv.protocol import (
    ID_BITS,
    OK,
    SYSTEM_ERROR,
    KillExecutor,
    Notice,
    RegisterWorker,
    ReleaseReservation,
    ReservationUpdate,
    Reserve,
    SpawnExecutor,
    StatusRequest,
    SubmitReserved,
    TaskDone,
)
from qsrv.scheduler._events import Close, Connected, Disconnected, Send, Tick
from tests.unit.test_scheduler_state import Harness, runs, values


class H(Harness):
    def reserve(self, conn: int, target: dict[str, float], name: str = "r",
                timeout: float = 0.0) -> tuple[int, list[Any]]:
        rid = self.oid(conn)
        return rid, self.send(conn, Reserve(rid, normalize_target(target), name, timeout))

    def submit_in(self, conn: int, rid: int, target: dict[str, float] | None = None,
                  retries: int = 0, deps: list[int] = ()) -> tuple[int, list[Any]]:
        tid = self.oid(conn)
        resources = normalize_target(target) if target is not None else normalize_target(
            {"cpu": 1})
        return tid, self.send(conn, SubmitReserved(rid, tid, b"f" * 16, b"args", (), list(deps),
                                                   resources, retries, 0.0, False, "rt"))

    def done(self, ex: int, tid: int) -> list[Any]:
        return self.send(ex, TaskDone(tid, OK, b"v", (), [], False, 0.5))

    def tenant_driver(self, tenant: str) -> int:
        conn = self.next_conn
        self.next_conn += 1
        self.s.handle(Connected(conn, "driver", conn, tenant))
        from qsrv.protocol import RegisterFunction
        self.send(conn, RegisterFunction(b"f" * 16, b"fn"))
        return conn


def updates(actions: list[Any], conn: int | None = None) -> list[ReservationUpdate]:
    return [a.msg for a in actions if isinstance(a, Send) and isinstance(a.msg, ReservationUpdate)
            and (conn is None or a.conn == conn)]


def failure(value: Any) -> tuple[str, str]:
    assert value.status == SYSTEM_ERROR
    kind, text = msgpack.unpackb(value.data)
    return kind, text


def status(h: H, conn: int) -> dict[str, Any]:
    [reply] = [a.msg for a in h.send(conn, StatusRequest(1)) if isinstance(a, Send)]
    return reply.status


@pytest.fixture
def h() -> H:
    return H()


def test_a_reservation_holds_capacity_that_nothing_else_uses(h: H) -> None:
    _wid, (_ex1, _ex2) = h.worker(cpus=2)
    d = h.driver()
    rid, out = h.reserve(d, {"cpu": 1})
    [upd] = updates(out, d)
    assert (upd.res_id, upd.status, upd.worker) == (rid, "ready", "w")
    # two plain tasks of one CPU each: only one runs, the other waits for the capacity
    _t1, out1 = h.submit(d)
    _t2, out2 = h.submit(d)
    assert len(runs(out1)) == 1 and runs(out2) == []
    [listed] = status(h, d)["reservations"]
    assert listed["status"] == "ready" and listed["worker"] == "w" and listed["holder"] == d
    # a reserved task runs on the other executor, dedicated to the reservation from now on
    rt, out = h.submit_in(d, rid)
    [(rex, tid)] = runs(out)
    assert tid == rt and rex != runs(out1)[0][0]
    out = h.done(rex, rt)
    assert values(out, d)[0].status == OK
    # the plain task still waits: the idle executor is the reservation's, and so is the CPU
    assert runs(out) == []
    # the reservation's second task runs on the same (warm) executor
    rt2, out = h.submit_in(d, rid)
    assert runs(out) == [(rex, rt2)]


def test_reserved_tasks_wait_for_an_executor_of_their_own(h: H) -> None:
    wid, (ex,) = h.worker(cpus=2, executors=1)
    d = h.driver()
    t1, out = h.submit(d)
    assert runs(out) == [(ex, t1)]  # the only executor is busy with a plain task
    rid, _ = h.reserve(d, {"cpu": 1})
    rt, out = h.submit_in(d, rid)
    assert runs(out) == []
    assert any(isinstance(a, Send) and isinstance(a.msg, SpawnExecutor) for a in out)
    new = h.executor(wid)  # the next executor of that worker is the reservation's
    rex_runs = [r for r in runs(h.done(ex, t1)) if r[1] == rt] or None
    assert rex_runs is None  # the freed plain executor is not used for it
    assert h.s.dispatcher.executors[new].reservation is not None


def test_reserved_task_runs_when_its_executor_registers(h: H) -> None:
    wid, (_ex,) = h.worker(cpus=2, executors=1)
    d = h.driver()
    _t1, _ = h.submit(d)
    rid, _ = h.reserve(d, {"cpu": 1})
    rt, _ = h.submit_in(d, rid)
    conn = h.connect("executor")
    from qsrv.protocol import RegisterExecutor
    out = h.send(conn, RegisterExecutor(wid, 1000 + conn))
    assert runs(out) == [(conn, rt)]


def test_release_fails_its_tasks_stops_its_executors_and_returns_the_capacity(h: H) -> None:
    _wid, (_ex1, _ex2) = h.worker(cpus=2)
    d = h.driver()
    rid, _ = h.reserve(d, {"cpu": 2})
    plain, out = h.submit(d)
    assert runs(out) == []  # all the capacity is reserved
    running, out = h.submit_in(d, rid)
    [(rex, _)] = runs(out)
    queued, out = h.submit_in(d, rid, target={"cpu": 2})
    assert runs(out) == []  # does not fit next to the running one
    out = h.send(d, ReleaseReservation(rid))
    failed = {v.object_id: failure(v) for v in values(out, d)}
    assert failed[running][0] == "reservation" and failed[queued][0] == "reservation"
    assert "released by its holder" in failed[queued][1]
    assert any(isinstance(a, Send) and isinstance(a.msg, KillExecutor) for a in out)
    assert any(isinstance(a, Close) and a.conn == rex for a in out)
    [upd] = updates(out, d)
    assert upd.status == "released" and "holder" in upd.reason
    assert [t for _, t in runs(out)] == [plain]  # the capacity went back: the plain task runs
    assert status(h, d)["reservations"] == []
    # a task submitted to it now fails with the reason
    _late, out = h.submit_in(d, rid)
    kind, text = failure(values(out, d)[0])
    assert kind == "reservation" and "released by its holder" in text
    h.send(d, ReleaseReservation(rid))  # idempotent


def test_the_holders_disconnection_releases_it(h: H) -> None:
    _wid, _ = h.worker(cpus=1)
    holder, other = h.driver(), h.driver()
    _rid, _ = h.reserve(holder, {"cpu": 1})
    waiting, out = h.submit(other)
    assert runs(out) == []
    out = h.s.handle(Disconnected(holder, "gone"))
    assert [t for _, t in runs(out)] == [waiting]
    assert h.s.reservations.live == {}


def test_a_reservation_whose_worker_dies_is_placed_again(h: H) -> None:
    w1, _ = h.worker(cpus=1)
    d = h.driver()
    rid, out = h.reserve(d, {"cpu": 1})
    assert updates(out)[0].status == "ready"
    rt, out = h.submit_in(d, rid, retries=1)
    [(_rex, _)] = runs(out)
    w2, (_ex2,) = h.worker(cpus=1)
    out = h.s.handle(Disconnected(h.worker_conn[w1], "killed"))
    [upd] = updates(out, d)[-1:]
    assert upd.status == "ready" and h.s.reservations.live[rid].worker.id == w2
    # the task it ran is retried inside it, on the other worker
    assert [t for _, t in runs(out)] == [rt]


def test_infeasible_reservation_says_why_and_becomes_pending_when_a_worker_fits(h: H) -> None:
    h.worker(cpus=1)
    d = h.driver()
    rid, out = h.reserve(d, {"cpu": 4})
    [upd] = updates(out, d)
    assert upd.status == "infeasible" and "cpu" in upd.reason
    assert any(isinstance(a, Send) and isinstance(a.msg, Notice) for a in out)
    _rt, out = h.submit_in(d, rid)
    kind, text = failure(values(out, d)[0])
    assert kind == "reservation" and "infeasible" in text
    conn = h.connect("worker")
    out = h.send(conn, RegisterWorker("big", normalize_target({"cpu": 4}), [], 1, {}))
    assert [u.status for u in updates(out, d)] == ["pending", "ready"]


def test_a_reservation_not_ready_within_its_timeout_is_released(h: H) -> None:
    _wid, (_ex,) = h.worker(cpus=1)
    d = h.driver()
    _t1, _ = h.submit(d)  # holds the only CPU
    _rid, out = h.reserve(d, {"cpu": 1}, timeout=2.0)
    assert updates(out) == []  # pending: nothing to say yet
    out = h.s.handle(Tick(103.0))
    [upd] = updates(out, d)
    assert upd.status == "released" and "timeout of 2 s" in upd.reason


def test_a_task_larger_than_its_reservation_fails(h: H) -> None:
    h.worker(cpus=4)
    d = h.driver()
    rid, _ = h.reserve(d, {"cpu": 1})
    _, out = h.submit_in(d, rid, target={"cpu": 2})
    kind, text = failure(values(out, d)[0])
    assert kind == "reservation" and "does not fit" in text


def test_another_tenant_cannot_use_a_reservation(h: H) -> None:
    h.worker(cpus=2)
    d = h.driver()
    rid, _ = h.reserve(d, {"cpu": 1})
    alice = h.tenant_driver("alice")
    _, out = h.submit_in(alice, rid)
    kind, text = failure(values(out, alice)[0])
    assert kind == "reservation" and "does not exist" in text


def test_a_reservation_id_outside_the_clients_namespace_closes_it(h: H) -> None:
    h.worker(cpus=1)
    d, other = h.driver(), h.driver()
    out = h.send(d, Reserve((other << ID_BITS) | 99, normalize_target({"cpu": 1}), "", 0.0))
    assert any(isinstance(a, Close) and a.conn == d for a in out)


def test_pending_reservations_take_freed_capacity_before_queued_tasks(h: H) -> None:
    _wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    t1, _ = h.submit(d)
    _rid, _ = h.reserve(d, {"cpu": 1})
    _t2, _ = h.submit(d)
    out = h.done(ex, t1)
    assert updates(out, d)[0].status == "ready"
    assert runs(out) == []  # t2 waits: the CPU is the reservation's now


def test_gpu_reservation_gives_its_devices_to_its_tasks(h: H) -> None:
    conn = h.connect("worker")
    wid = h.send(conn, RegisterWorker("g", normalize_target({"cpu": 2, "gpu": 2}),
                                      ["0", "1"], 1, {}))[0].msg.worker_id
    h.worker_conn[wid] = conn
    h.executor(wid)
    d = h.driver()
    rid, _ = h.reserve(d, {"cpu": 1, "gpu": 1})
    _, out = h.submit_in(d, rid, target={"cpu": 1, "gpu": 1})
    [run] = [a.msg for a in out if isinstance(a, Send) and type(a.msg).__name__ == "RunTask"]
    assert run.gpu_ids == h.s.reservations.live[rid].gpu_ids and len(run.gpu_ids) == 1
