"""What a tenant's driver (a gateway job, connected with its scoped credential) may read: the
objects of its own tasks and puts, and refs it was given inside values sent to it; nothing
else. The scheduler's state machine, driven by events (no sockets), and one live check."""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest

from qsrv._resources import normalize_target
from qsrv.errors import ConnectionLostError
from qsrv.protocol import (
    ID_BITS,
    OK,
    ObjectValue,
    PutObject,
    RefUpdate,
    RegisterExecutor,
    RegisterFunction,
    RegisterWorker,
    RunTask,
    SubmitTask,
    Subscribe,
    TaskDone,
    job_credential,
)
from qsrv.scheduler._events import Close, Connected, Received, Send, Tick
from qsrv.scheduler._state import SchedulerState
from qsrv.transport import SyncConnection
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster

FN = b"f" * 16


class Scheduler:
    def __init__(self) -> None:
        self.s = SchedulerState(heartbeat_timeout=5.0)
        self.s.handle(Tick(100.0))
        self.next = 1
        self.seq: dict[int, int] = {}

    def connect(self, role: str, tenant: str = "") -> int:
        conn = self.next
        self.next += 1
        self.s.handle(Connected(conn, role, conn, tenant))
        return conn

    def send(self, conn: int, msg: Any) -> list[Any]:
        out = self.s.handle(Received(conn, msg))
        self.s.validate_state()
        return out

    def oid(self, conn: int) -> int:
        self.seq[conn] = self.seq.get(conn, 0) + 1
        return (conn << ID_BITS) | self.seq[conn]

    def put(self, conn: int, refs: list[int] = ()) -> tuple[int, list[Any]]:  # type: ignore[assignment]
        oid = self.oid(conn)
        return oid, self.send(conn, PutObject(oid, b"v", (), list(refs), OK))


def closed(out: list[Any], conn: int) -> bool:
    return any(isinstance(a, Close) and a.conn == conn for a in out)


def sent_values(out: list[Any], conn: int) -> list[ObjectValue]:
    return [a.msg for a in out if isinstance(a, Send) and a.conn == conn
            and isinstance(a.msg, ObjectValue)]


@pytest.fixture
def sched() -> Scheduler:
    return Scheduler()


def test_a_tenant_reads_its_own_objects_only(sched: Scheduler) -> None:
    other = sched.connect("driver")
    victim, _ = sched.put(other)
    job = sched.connect("driver", tenant="gw.2")
    mine, _ = sched.put(job)
    assert sent_values(sched.send(job, Subscribe([mine])), job)[0].object_id == mine
    for attempt in (Subscribe([victim]), RefUpdate([victim], [])):
        job = sched.connect("driver", tenant="gw.2")
        out = sched.send(job, attempt)
        assert closed(out, job) and not sent_values(out, job), attempt
    job = sched.connect("driver", tenant="gw.2")
    sched.send(job, RegisterFunction(FN, b"fn"))
    tid = sched.oid(job)
    out = sched.send(job, SubmitTask(tid, FN, b"a", (), [victim], normalize_target(None), 0,
                                     0.0, False, "t"))
    assert closed(out, job)  # not even as an argument
    job = sched.connect("driver", tenant="gw.2")
    _, out = sched.put(job, refs=[victim])  # nor inside a value it makes
    assert closed(out, job)


def test_a_token_driver_is_not_limited(sched: Scheduler) -> None:
    one = sched.connect("driver")
    other = sched.connect("driver")
    oid, _ = sched.put(one)
    assert sent_values(sched.send(other, Subscribe([oid])), other)


def test_refs_a_tenant_is_given_become_readable(sched: Scheduler) -> None:
    """A task of the tenant returns a value holding a ref its executor made: the tenant was
    given it, so it may read it."""
    worker = sched.connect("worker")
    out = sched.send(worker, RegisterWorker("w", normalize_target({"cpu": 1}), [], 1, {}))
    wid = out[0].msg.worker_id
    ex = sched.connect("executor", tenant="gw.2")  # a tenant's tasks run on its executors
    sched.send(ex, RegisterExecutor(wid, 1234))
    job = sched.connect("driver", tenant="gw.2")
    sched.send(job, RegisterFunction(FN, b"fn"))
    tid = sched.oid(job)
    out = sched.send(job, SubmitTask(tid, FN, b"a", (), [], normalize_target(None), 0, 0.0,
                                     False, "t"))
    assert any(isinstance(a, Send) and isinstance(a.msg, RunTask) for a in out)
    inner, _ = sched.put(ex)  # made inside the task
    out = sched.send(ex, TaskDone(tid, OK, b"holds inner", (), [inner], False, 0.0))
    [value] = sent_values(out, job)
    assert value.refs == [inner]
    out = sched.send(job, Subscribe([inner]))
    assert not closed(out, job) and sent_values(out, job)[0].object_id == inner


def test_a_live_scheduler_closes_a_tenant_that_reads_another_tenants_object() -> None:
    with Cluster(0) as cluster:
        owner = SyncConnection(cluster.address, TOKEN, "driver")
        victim = (owner.client_no << ID_BITS) | 1
        owner.send([PutObject(victim, pickle.dumps("secret"), (), [], OK)])
        owner.send([Subscribe([victim])])
        wait_for(lambda: any(type(m) is ObjectValue for m in owner.receive(0.5)),
                 what="the owner's own value")
        credential = job_credential(TOKEN, "gw.2", "job1", time.time() + 60)
        thief = SyncConnection(cluster.address, credential, "driver")
        thief.send([Subscribe([victim])])
        with pytest.raises(ConnectionLostError):
            while True:
                for msg in thief.receive(5.0):
                    assert type(msg) is not ObjectValue, "a tenant read another's object"
        owner.close()
