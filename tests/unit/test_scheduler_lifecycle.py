"""The scheduler's task lifecycle and its invariants: the transition table (as documented) is
the one enforced, an illegal move raises, `validate_state()` notices a broken rule, and losing
a worker or a client touches only what it had (no scan of every object). No sockets."""

from __future__ import annotations

import re
from typing import Any

import pytest

from qsrv._resources import SCALE
from qsrv.protocol import (
    OK,
    STORED,
    Cancel,
    ObjectValue,
    PutObject,
    RefUpdate,
    Subscribe,
    TaskDone,
    encode_location,
)
from qsrv.scheduler import _lifecycle
from qsrv.scheduler._events import Close, Disconnected, Send
from qsrv.scheduler._lifecycle import (
    FINISHED,
    PENDING,
    READY,
    RUNNING,
    TRANSITIONS,
    InvariantError,
    TaskState,
    set_state,
)
from qsrv.scheduler._records import Obj, Task

from .test_scheduler_state import Harness, error_kind, runs, values


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_states_are_in_lifecycle_order() -> None:
    assert [s.name for s in sorted(TaskState)] == [
        "PENDING", "READY", "ASSIGNED", "RUNNING", "FINISHED"]


def test_the_documented_table_is_the_enforced_one() -> None:
    doc = _lifecycle.__doc__ or ""
    rows = re.findall(r"^    ([A-Z]+) +([A-Z]+|-) ", doc, re.MULTILINE)
    documented: dict[str, set[str]] = {s.name: set() for s in TaskState}
    for old, new in rows:
        if new != "-":
            documented[old].add(new)
    assert documented == {old.name: {n.name for n in new} for old, new in TRANSITIONS.items()}
    assert not TRANSITIONS[FINISHED]


def _running_task(h: Harness) -> Task:
    h.worker(cpus=1)
    d = h.driver()
    tid, _ = h.submit(d)
    task = h.s.objects[tid]
    assert isinstance(task, Task) and task.state == RUNNING
    return task


def test_an_illegal_transition_raises_and_changes_nothing(h: Harness) -> None:
    task = _running_task(h)
    with pytest.raises(InvariantError, match="RUNNING -> PENDING"):
        set_state(task, PENDING)
    assert task.state == RUNNING
    set_state(task, FINISHED)
    for new in TaskState:
        with pytest.raises(InvariantError):
            set_state(task, new)


def test_every_allowed_transition_is_accepted(h: Harness) -> None:
    task = _running_task(h)
    for old, allowed in TRANSITIONS.items():
        for new in allowed:
            task.state = old
            set_state(task, new)
            assert task.state == new


def test_validate_state_notices_broken_rules(h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    oid = h.oid(d)
    h.send(d, PutObject(oid, encode_location(wid, 100, "127.0.0.1:1"), (), [], STORED))
    tid, _ = h.submit(d, deps=[oid])
    obj, task = h.s.objects[oid], h.s.objects[tid]
    assert isinstance(obj, Obj) and isinstance(task, Task) and task.state == RUNNING
    worker, index, owner = h.s.workers[wid], h.s.directory.on_node[wid], h.s.clients[d]

    def broken() -> None:
        with pytest.raises(InvariantError):
            h.s.validate_state()

    obj.holders -= 1  # the task's argument and the driver's ref: 2
    broken()
    obj.holders += 1
    index.discard(oid)
    broken()
    index.add(oid)
    worker.free["cpu"] += SCALE
    broken()
    worker.free["cpu"] -= SCALE
    task.state = READY
    broken()
    task.state = RUNNING
    worker.idle.append(h.s.executors[ex])
    broken()
    worker.idle.pop()
    del owner.tasks[tid]
    broken()
    owner.tasks[tid] = task
    h.s.validate_state()  # all restored


class _NoScan(dict[int, Any]):
    """A directory that refuses to be walked."""

    def _walk(self, *args: Any) -> Any:
        raise AssertionError("walked every object")

    __iter__ = keys = values = items = _walk


def test_losing_a_worker_or_a_client_does_not_walk_every_object(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    a, (ex_a,) = h.worker(cpus=1)
    b, _ = h.worker(cpus=1)
    d = h.driver()
    other = h.driver()
    on_a = [h.oid(d) for _ in range(3)]
    for oid in on_a:
        h.send(d, PutObject(oid, encode_location(a, 1 << 20, "127.0.0.1:1"), (), [], STORED))
    on_b = h.oid(other)
    h.send(other, PutObject(on_b, encode_location(b, 1 << 20, "127.0.0.1:1"), (), [], STORED))
    inline = [h.oid(other) for _ in range(50)]
    for oid in inline:
        h.send(other, PutObject(oid, b"v", (), []))
    running, _ = h.submit(d, retries=1)
    queued, _ = h.submit(d)
    with monkeypatch.context() as m:
        m.setattr(h.s.directory, "objects", _NoScan(h.s.directory.objects))
        m.setattr(h.s, "validate_state", lambda: None)  # it walks everything, by design
        out = h.s.handle(Disconnected(h.worker_conn[a], "gone"))
        out += h.s.handle(Disconnected(d, "gone"))
        objects = dict(dict.items(h.s.directory.objects))
    h.s.directory.objects = objects
    h.s.validate_state()
    assert Close(ex_a, f"worker {a} removed") in out
    assert a not in h.s.directory.on_node
    assert h.s.directory.on_node[b] == {on_b}
    assert all(oid not in h.s.objects for oid in [*on_a, running, queued])
    assert all(oid in h.s.objects for oid in [on_b, *inline])


def test_a_task_that_failed_with_its_argument_is_reported_once(h: Harness) -> None:
    h.worker(cpus=1)
    d = h.driver()
    first, _ = h.submit(d)
    second, _ = h.submit(d, deps=[first])
    watcher = h.driver()
    h.send(watcher, RefUpdate([second], []))
    h.send(watcher, Subscribe([second]))
    out = h.s.handle(Disconnected(d, "gone"))  # cancels both: the second fails with the first
    (v,) = [a.msg for a in out if isinstance(a, Send) and isinstance(a.msg, ObjectValue)]
    assert v.object_id == second and error_kind(v) == "cancelled"


def test_a_malformed_result_location_closes_the_executor_and_the_task_goes_on(
        h: Harness) -> None:
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    tid, _ = h.submit(d, retries=1)
    out = h.send(ex, TaskDone(tid, STORED, b"\xc1garbage", (), [], False, 0.1))
    assert any(isinstance(a, Close) and a.conn == ex for a in out)
    task = h.s.objects[tid]
    assert isinstance(task, Task) and task.state == READY and task.max_retries == 0
    ex2 = h.executor(wid)
    assert task.executor is not None and task.executor.conn == ex2
    (v,) = values(h.send(ex2, TaskDone(tid, OK, b"r", (), [], False, 0.1)), d)
    assert v.data == b"r"


def test_cancel_of_a_finished_task_is_a_no_op(h: Harness) -> None:
    _, (ex,) = h.worker(cpus=1)
    d = h.driver()
    tid, out = h.submit(d)
    assert runs(out) == [(ex, tid)]
    h.send(ex, TaskDone(tid, OK, b"r", (), [], False, 0.1))
    assert h.send(d, Cancel(tid)) == []
