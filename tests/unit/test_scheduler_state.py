"""The scheduler's state machine, driven by events with no sockets: placement, dependencies,
refcounts, failures, cancellation, timeouts, infeasible targets."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from qsrv._resources import SCALE, normalize_target
from qsrv.protocol import (
    ID_BITS,
    OK,
    SYSTEM_ERROR,
    TASK_ERROR,
    Cancel,
    FunctionDef,
    Heartbeat,
    KillExecutor,
    Notice,
    ObjectValue,
    PutObject,
    RefUpdate,
    RegisterExecutor,
    RegisterFunction,
    RegisterWorker,
    RunTask,
    SpawnExecutor,
    StatusRequest,
    SubmitTask,
    Subscribe,
    TaskBlocked,
    TaskDone,
    TaskReturned,
    TaskUnblocked,
    WorkerInfo,
)
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
from qsrv.scheduler._lifecycle import ASSIGNED, READY, RUNNING
from qsrv.scheduler._state import SchedulerState


class CheckedState(SchedulerState):
    """The scheduler, with every invariant checked after every event."""

    def handle(self, event: Event) -> list[Action]:
        actions = super().handle(event)
        self.validate_state()
        return actions


class Harness:
    """A scheduler plus bookkeeping of connections, so tests read like conversations."""

    def __init__(self) -> None:
        self.s = CheckedState(heartbeat_timeout=5.0)
        self.next_conn = 1
        self.seq: dict[int, int] = {}
        self.worker_conn: dict[int, int] = {}  # worker id -> conn
        self.s.handle(Tick(100.0))

    def connect(self, role: str) -> int:
        conn = self.next_conn
        self.next_conn += 1
        assert self.s.handle(Connected(conn, role, conn)) == []
        return conn

    def send(self, conn: int, msg: Any) -> list[Any]:
        return self.s.handle(Received(conn, msg))

    def worker(self, cpus: float = 2, gpus: int = 0, executors: int | None = None,
               **custom: float) -> tuple[int, list[int]]:
        conn = self.connect("worker")
        totals = normalize_target({"cpu": cpus, **custom})
        out = self.send(conn, RegisterWorker("w", totals, [str(i) for i in range(gpus)], 1, {}))
        wid = out[0].msg.worker_id
        self.worker_conn[wid] = conn
        execs = [self.executor(wid) for _ in range(executors if executors is not None
                                                   else max(1, int(cpus)))]
        return wid, execs

    def executor(self, wid: int) -> int:
        conn = self.connect("executor")
        self.send(conn, RegisterExecutor(wid, 1000 + conn))
        return conn

    def driver(self) -> int:
        conn = self.connect("driver")
        self.send(conn, RegisterFunction(b"f" * 16, b"fn"))
        return conn

    def oid(self, conn: int) -> int:
        self.seq[conn] = self.seq.get(conn, 0) + 1
        return (conn << ID_BITS) | self.seq[conn]

    def submit(self, conn: int, target: dict[str, float] | None = None, deps: list[int] = (),
               timeout: float = 0.0, retries: int = 0, name: str = "t",
               retry_exc: bool = False) -> tuple[int, list[Any]]:
        tid = self.oid(conn)
        out = self.send(conn, SubmitTask(tid, b"f" * 16, b"args", (), list(deps),
                                         normalize_target(target), retries, timeout, retry_exc,
                                         name))
        return tid, out


def runs(actions: list[Any]) -> list[tuple[int, int]]:
    """(executor conn, task id) for each RunTask sent."""
    return [(a.conn, a.msg.task_id) for a in actions
            if isinstance(a, Send) and isinstance(a.msg, RunTask)]


def values(actions: list[Any], conn: int | None = None) -> list[ObjectValue]:
    return [a.msg for a in actions if isinstance(a, Send) and isinstance(a.msg, ObjectValue)
            and (conn is None or a.conn == conn)]


def error_kind(value: ObjectValue) -> str:
    assert value.status == SYSTEM_ERROR
    return str(msgpack.unpackb(value.data)[0])


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_task_runs_and_result_goes_to_owner(h: Harness) -> None:
    _, (ex,) = h.worker(cpus=1)
    d = h.driver()
    tid, out = h.submit(d)
    assert runs(out) == [(ex, tid)]
    # the executor gets the function once, then the task
    assert isinstance(out[0].msg, FunctionDef)
    done = h.send(ex, TaskDone(tid, OK, b"result", (), [], False, 0.0))
    (v,) = values(done, d)
    assert (v.object_id, v.status, v.data) == (tid, OK, b"result")
    # second task on the same executor: no second FunctionDef
    tid2, out2 = h.submit(d)
    assert not any(isinstance(a.msg, FunctionDef) for a in out2 if isinstance(a, Send))
    assert runs(out2) == [(ex, tid2)]


def test_capacity_is_held_while_running_and_returned(h: Harness) -> None:
    h.worker(cpus=2, executors=3)
    d = h.driver()
    started = [runs(h.submit(d)[1]) for _ in range(3)]
    assert [len(r) for r in started] == [1, 1, 0]  # two CPUs: the third waits
    ex, tid = started[0][0]
    out = h.send(ex, TaskDone(tid, OK, b"", (), [], False, 0.0))
    assert len(runs(out)) == 1  # the freed CPU runs the queued task


def test_placement_with_mixed_resources(h: Harness) -> None:
    _w_cpu, cpu_execs = h.worker(cpus=4)
    _w_gpu, gpu_execs = h.worker(cpus=2, gpus=1)
    _w_qpu, qpu_execs = h.worker(cpus=1, qpu=1)
    d = h.driver()
    where = {}
    gpu_ids = {}
    for target, name in [({"gpu": 1}, "gpu"), ({"qpu": 1}, "qpu"), ({"cpu": 3}, "big"),
                         ({"cpu": 1}, "plain")]:
        _, out = h.submit(d, target)
        ((conn, _),) = runs(out)
        where[name] = conn
        gpu_ids[name] = next(a.msg.gpu_ids for a in out if isinstance(a, Send)
                             and isinstance(a.msg, RunTask))
    assert where["gpu"] in gpu_execs and gpu_ids["gpu"] == ["0"]
    assert where["qpu"] in qpu_execs
    assert where["big"] in cpu_execs
    assert gpu_ids["plain"] == []
    # the least loaded worker takes plain work: cpu worker is 3/4 busy, gpu worker 1/2
    assert where["plain"] in gpu_execs


def test_gpu_devices_are_assigned_whole_and_fractional(h: Harness) -> None:
    h.worker(cpus=8, gpus=2, executors=6)
    d = h.driver()
    msgs = []
    for target in [{"gpu": 1, "cpu": 0}, {"gpu": 0.5, "cpu": 0}, {"gpu": 0.5, "cpu": 0},
                   {"gpu": 0.5, "cpu": 0}]:
        _, out = h.submit(d, target)
        msgs += [a.msg for a in out if isinstance(a, Send) and isinstance(a.msg, RunTask)]
    assert msgs[0].gpu_ids == ["0"]
    assert msgs[1].gpu_ids == msgs[2].gpu_ids == ["1"]  # two halves share device 1
    assert len(msgs) == 3  # no device has half a GPU free any more
    # whole GPUs need whole free devices
    _, out = h.submit(d, {"gpu": 1, "cpu": 0})
    assert runs(out) == []


def test_infeasible_target_warns_and_stays_pending(h: Harness) -> None:
    h.worker(cpus=2)
    d = h.driver()
    tid, out = h.submit(d, {"cpu": 64})
    assert runs(out) == []
    warnings = [a for a in out if isinstance(a, Log) and a.level == "warning"]
    notices = [a.msg for a in out if isinstance(a, Send) and isinstance(a.msg, Notice)]
    assert warnings and "fits no connected worker" in warnings[0].text
    assert notices and "cpu" in notices[0].text
    status = h.s.status()
    assert status["tasks"]["infeasible"] == 1
    assert status["infeasible"][0]["count"] == 1
    # a bigger worker joining makes it run
    _, _execs = h.worker(cpus=64, executors=1)
    assert h.s.objects[tid].state == RUNNING


def test_infeasible_task_with_timeout_fails_clearly(h: Harness) -> None:
    h.worker(cpus=2)
    d = h.driver()
    _tid, _ = h.submit(d, {"gpu": 1}, timeout=3.0)
    assert values(h.s.handle(Tick(102.0))) == []
    (v,) = values(h.s.handle(Tick(103.5)), d)
    assert error_kind(v) == "infeasible"
    assert "gpu" in msgpack.unpackb(v.data)[1]


def test_running_task_timeout_kills_executor(h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    _tid, _ = h.submit(d, timeout=1.0)
    out = h.s.handle(Tick(101.5))
    kills = [a.msg for a in out if isinstance(a, Send) and isinstance(a.msg, KillExecutor)]
    assert kills and kills[0].pid == 1000 + ex
    assert Close(ex, "task timeout") in out
    (v,) = values(out, d)
    assert error_kind(v) == "timeout"
    assert h.s.workers[wid].free["cpu"] == SCALE  # resources returned


def test_dependencies_wait_then_run_with_values(h: Harness) -> None:
    h.worker(cpus=1)
    d = h.driver()
    a, out_a = h.submit(d)
    ((ex, _),) = runs(out_a)
    b, out_b = h.submit(d, deps=[a])
    assert runs(out_b) == []  # waits for a
    out = h.send(ex, TaskDone(a, OK, b"A", (), [], False, 0.0))
    sent = [x.msg for x in out if isinstance(x, Send) and x.conn == ex]
    # the dependency's value precedes the task that uses it
    assert isinstance(sent[0], ObjectValue) and sent[0].object_id == a
    assert isinstance(sent[1], RunTask) and sent[1].task_id == b and sent[1].deps == [a]


def test_failed_dependency_fails_dependents_with_same_error(h: Harness) -> None:
    h.worker(cpus=1)
    d = h.driver()
    a, out_a = h.submit(d)
    ((ex, _),) = runs(out_a)
    b, _ = h.submit(d, deps=[a])
    out = h.send(ex, TaskDone(a, TASK_ERROR, b"boom", (), [], False, 0.0))
    got = {v.object_id: v for v in values(out, d)}
    assert got[b].status == TASK_ERROR and got[b].data == b"boom"


def test_put_refcount_and_free(h: Harness) -> None:
    d = h.driver()
    oid = h.oid(d)
    h.send(d, PutObject(oid, b"v", (), []))
    other = h.driver()
    h.send(other, RefUpdate([oid], []))
    assert h.s.objects[oid].holders == 2
    h.send(d, RefUpdate([], [oid]))
    assert oid in h.s.objects
    h.send(other, RefUpdate([], [oid]))
    assert oid not in h.s.objects


def test_contained_refs_live_as_long_as_the_container(h: Harness) -> None:
    d = h.driver()
    inner, outer = h.oid(d), h.oid(d)
    h.send(d, PutObject(inner, b"i", (), []))
    h.send(d, PutObject(outer, b"o", (), [inner]))
    h.send(d, RefUpdate([], [inner]))
    assert inner in h.s.objects  # held by outer
    h.send(d, RefUpdate([], [outer]))
    assert inner not in h.s.objects and outer not in h.s.objects


def test_subscribe_to_someone_elses_object(h: Harness) -> None:
    h.worker(cpus=1)
    d = h.driver()
    tid, out = h.submit(d)
    ((ex, _),) = runs(out)
    other = h.driver()
    h.send(other, RefUpdate([tid], []))
    assert h.send(other, Subscribe([tid])) == []
    out = h.send(ex, TaskDone(tid, OK, b"x", (), [], False, 0.0))
    assert {a.conn for a in out if isinstance(a, Send) and isinstance(a.msg, ObjectValue)} \
        == {d, other}
    # a freed object is reported lost
    (v,) = values(h.send(other, Subscribe([12345])))
    assert error_kind(v) == "lost"


def test_dropped_result_is_freed_on_completion(h: Harness) -> None:
    h.worker(cpus=1)
    d = h.driver()
    tid, out = h.submit(d)
    ((ex, _),) = runs(out)
    h.send(d, RefUpdate([], [tid]))
    out = h.send(ex, TaskDone(tid, OK, b"x", (), [], False, 0.0))
    assert values(out) == [] and tid not in h.s.objects


def test_executor_death_retries_then_fails(h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    tid, _ = h.submit(d, retries=1)
    h.s.handle(Disconnected(ex, "killed"))
    ex2 = h.executor(wid)  # the agent's replacement
    assert h.s.objects[tid].executor.conn == ex2  # retried on the new executor
    out = h.s.handle(Disconnected(ex2, "killed again"))
    (v,) = values(out, d)
    assert error_kind(v) == "worker_died"
    assert "no retries left" in msgpack.unpackb(v.data)[1]
    assert h.s.workers[wid].free["cpu"] == SCALE


def test_application_errors_retried_only_when_asked(h: Harness) -> None:
    _, (ex,) = h.worker(cpus=1)
    d = h.driver()
    tid, _ = h.submit(d, retries=2, retry_exc=True)
    out = h.send(ex, TaskDone(tid, TASK_ERROR, b"e", (), [], True, 0.0))
    assert runs(out) == [(ex, tid)]
    out = h.send(ex, TaskDone(tid, TASK_ERROR, b"e", (), [], False, 0.0))
    assert values(out, d)[0].status == TASK_ERROR


def test_worker_heartbeat_loss_requeues_its_tasks(h: Harness) -> None:
    w1, (e1,) = h.worker(cpus=1)
    d = h.driver()
    tid, out = h.submit(d, retries=3)
    assert runs(out) == [(e1, tid)]
    w2, (e2,) = h.worker(cpus=1)
    h.send(h.worker_conn[w2], Heartbeat(0.0))
    h.s.handle(Tick(103.0))
    h.send(h.worker_conn[w2], Heartbeat(0.0))
    out = h.s.handle(Tick(105.5))  # w1 silent for 5.5 s, w2 heard at 103
    assert Close(h.worker_conn[w1], "no heartbeat") in out
    assert runs(out) == [(e2, tid)]
    assert w1 not in h.s.workers and w2 in h.s.workers


def test_cancel_queued_and_running(h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    running, _ = h.submit(d)
    queued, _ = h.submit(d)
    (v,) = values(h.send(d, Cancel(queued)), d)
    assert error_kind(v) == "cancelled"
    out = h.send(d, Cancel(running))
    assert any(isinstance(a, Send) and isinstance(a.msg, KillExecutor) for a in out)
    assert error_kind(values(out, d)[0]) == "cancelled"
    assert h.s.workers[wid].free["cpu"] == SCALE
    # a late report from the killed executor is ignored, not an error
    assert h.send(ex, TaskDone(running, OK, b"", (), [], False, 0.0)) == []


def test_owner_disconnect_cancels_its_tasks(h: Harness) -> None:
    _wid, _ = h.worker(cpus=1)
    d = h.driver()
    h.submit(d)
    h.submit(d)
    out = h.s.handle(Disconnected(d, "gone"))
    assert any(isinstance(a, Send) and isinstance(a.msg, KillExecutor) for a in out)
    assert not any(type(o).__name__ == "Task" for o in h.s.objects.values())
    assert h.s.objects == {}


def test_blocked_task_lends_its_cpu_and_more_executors_are_requested(h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    parent, _ = h.submit(d)
    child, out = h.submit(ex)  # nested submission from the executor's own client
    assert runs(out) == []
    out = h.send(ex, TaskBlocked(parent))
    assert any(isinstance(a, Send) and isinstance(a.msg, SpawnExecutor) for a in out)
    ex2 = h.executor(wid)
    assert h.s.objects[child].executor.conn == ex2
    assert h.s.workers[wid].free["cpu"] == 0  # the child holds the CPU the parent lent
    h.send(ex, TaskUnblocked(parent))
    assert h.s.workers[wid].free["cpu"] == -SCALE  # briefly oversubscribed, never lost
    h.send(ex2, TaskDone(child, OK, b"", (), [], False, 0.0))
    h.send(ex, TaskDone(parent, OK, b"", (), [], False, 0.0))
    assert h.s.workers[wid].free["cpu"] == SCALE


def test_protocol_violations_close_the_connection(h: Harness) -> None:
    d = h.driver()
    other = h.driver()
    # minting an id in someone else's namespace
    out = h.send(d, PutObject((other << ID_BITS) | 1, b"", (), []))
    assert any(isinstance(a, Close) and a.conn == d for a in out)
    # a driver pretending to be an executor
    d2 = h.driver()
    out = h.send(d2, TaskDone(1, OK, b"", (), [], False, 0.0))
    assert any(isinstance(a, Close) and a.conn == d2 for a in out)
    # a task for a function never registered
    d3 = h.connect("driver")
    out = h.send(d3, SubmitTask((d3 << ID_BITS) | 1, b"x" * 16, b"", (), [], {}, 0, 0.0,
                                False, "t"))
    assert any(isinstance(a, Close) and a.conn == d3 for a in out)
    # the others are unaffected
    reply = h.send(other, StatusRequest(1))[0].msg.status
    assert reply["clients"] == 0  # the asker is not counted; the violators are gone


# ---- tasks sent ahead to busy executors (pipelining) ----------------------------------------
def learn_fast(h: Harness, d: int, ex: int, elapsed: float = 0.001) -> None:
    """Run one task so the scheduler knows how long the function takes."""
    tid, _ = h.submit(d)
    h.send(ex, TaskDone(tid, OK, b"", (), [], False, elapsed))


def test_short_tasks_are_sent_ahead_and_capacity_passes_on(h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    learn_fast(h, d, ex)
    first, out = h.submit(d)
    second, out2 = h.submit(d)
    third, out3 = h.submit(d)
    fourth, out4 = h.submit(d)
    assert runs(out) == [(ex, first)]
    assert runs(out2) == [(ex, second)] and runs(out3) == [(ex, third)]  # sent ahead
    assert runs(out4) == []  # at most two ahead
    assert h.s.workers[wid].free["cpu"] == 0  # one CPU held, not three
    done = h.send(ex, TaskDone(first, OK, b"1", (), [], False, 0.001))
    assert runs(done) == [(ex, fourth)]  # the freed place in the queue is refilled
    assert h.s.objects[second].state == RUNNING  # now, on the same capacity
    for tid in (second, third, fourth):
        h.send(ex, TaskDone(tid, OK, b"", (), [], False, 0.001))
    assert h.s.workers[wid].free["cpu"] == SCALE


def test_slow_functions_are_not_sent_ahead(h: Harness) -> None:
    _, (ex,) = h.worker(cpus=1)
    d = h.driver()
    learn_fast(h, d, ex, elapsed=0.5)
    h.submit(d)
    _, out = h.submit(d)
    assert runs(out) == []  # waits in the scheduler, where any executor can take it


def test_cancelled_task_sent_ahead_stays_a_placeholder(h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    learn_fast(h, d, ex)
    first, _ = h.submit(d)
    ahead, _ = h.submit(d)
    out = h.send(d, Cancel(ahead))
    assert error_kind(values(out, d)[0]) == "cancelled"
    assert not any(isinstance(a, Send) and isinstance(a.msg, KillExecutor) for a in out)
    h.send(ex, TaskDone(first, OK, b"", (), [], False, 0.001))
    late = h.send(ex, TaskDone(ahead, OK, b"late", (), [], False, 0.001))
    assert values(late) == []  # the executor ran it anyway; its value is dropped
    assert h.s.workers[wid].free["cpu"] == SCALE


def test_blocked_task_gets_its_queue_back_to_the_scheduler(h: Harness) -> None:
    _wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    learn_fast(h, d, ex)
    parent, _ = h.submit(d)
    ahead, _ = h.submit(d)
    h.send(ex, TaskBlocked(parent))
    out = h.send(ex, TaskReturned([ahead]))
    assert h.s.objects[ahead].state in (READY, RUNNING)  # again, or running elsewhere
    assert ahead not in [t.id for t in h.s.executors[ex].queue]
    assert not any(conn == ex for conn, _ in runs(out))  # not back onto the blocked one


def test_executor_death_requeues_tasks_sent_ahead_without_a_retry(h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    learn_fast(h, d, ex)
    first, _ = h.submit(d, retries=1)
    ahead, _ = h.submit(d, retries=0)
    h.s.handle(Disconnected(ex, "killed"))
    ex2 = h.executor(wid)
    assert h.s.objects[first].max_retries == 0  # it was running: one retry used
    assert h.s.objects[ahead].state in (ASSIGNED, RUNNING)  # never started: queued again
    assert h.s.executors[ex2].task is not None


def test_a_batch_is_placed_once_and_a_violation_drops_the_rest_of_its_frame(h: Harness) -> None:
    _, _execs = h.worker(cpus=2)
    d = h.driver()
    ids = [h.oid(d) for _ in range(3)]
    msgs = [SubmitTask(i, b"f" * 16, b"", (), [], {"cpu": SCALE}, 0, 0.0, False, "t")
            for i in ids]
    out = h.s.handle(ReceivedBatch(d, msgs))
    assert sorted(t for _, t in runs(out)) == ids[:2]  # two CPUs; the third waits
    bad = h.driver()
    out = h.s.handle(ReceivedBatch(bad, [Cancel(1), RefUpdate([1], []), TaskDone(1, OK, b"", (),
                                                                                  [], False, 0.0),
                                         StatusRequest(9)]))
    assert any(isinstance(a, Close) and a.conn == bad for a in out)
    assert not any(isinstance(a, Send) and a.conn == bad for a in out)  # no reply after it


def test_worker_info_learned_later_shows_in_status(h: Harness) -> None:
    wid, _ = h.worker(cpus=1)
    h.send(h.worker_conn[wid], WorkerInfo({"quantum": {"methods": ["statevector"]}}))
    (worker,) = h.s.status()["workers"]
    assert worker["info"]["quantum"] == {"methods": ["statevector"]}
    d = h.driver()
    out = h.send(d, WorkerInfo({"x": 1}))  # only a worker may describe itself
    assert any(isinstance(a, Close) and a.conn == d for a in out)


def test_executors_past_the_cap_only_when_every_one_is_blocked(h: Harness) -> None:
    """Nested fan-outs wider than the executor cap: once every executor waits in `get`,
    one more executor is the only way forward (else a hang); while one is free, none."""
    wid, execs = h.worker(cpus=1, executors=12)  # the cap for 1 CPU: 1 * 4 + 8
    d = h.driver()
    running: list[tuple[int, int]] = []  # (executor conn, task)
    for _ in execs:
        tid, _ = h.submit(d)
        ex = h.s.objects[tid].executor.conn
        h.send(ex, TaskBlocked(tid))  # each waits on tasks to come, lending its CPU
        running.append((ex, tid))
    assert sorted(ex for ex, _ in running) == sorted(execs)
    last = running[-1][0]
    child, out = h.submit(last)  # the last one's nested task: no executor is idle
    assert any(isinstance(a, Send) and isinstance(a.msg, SpawnExecutor) for a in out)
    assert len(h.s.workers[wid].executors) == 12
    extra = h.executor(wid)
    assert h.s.objects[child].executor.conn == extra
    h.send(extra, TaskDone(child, OK, b"", (), [], False, 0.0))
    h.send(running[0][0], TaskUnblocked(running[0][1]))  # one executor runs again: back
    _, out = h.submit(last)  # under the rule, so no executor past the cap is asked for
    assert not any(isinstance(a, Send) and isinstance(a.msg, SpawnExecutor) for a in out)
