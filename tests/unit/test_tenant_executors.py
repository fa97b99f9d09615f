"""Executors tagged by tenant, in the scheduler's state machine (no sockets): a tenant's tasks
(a gateway job's driver, with a scoped credential) run only on executors started for that
tenant, and no executor ever runs tasks of two tenants. Invariants checked after every
event."""

from __future__ import annotations

from typing import Any

from qsrv._resources import normalize_target
from qsrv.protocol import (
    ID_BITS,
    OK,
    PutObject,
    RegisterExecutor,
    RegisterFunction,
    RetireExecutor,
    SpawnExecutor,
    SpawnTenantExecutor,
    SubmitTask,
    TaskDone,
)
from qsrv.scheduler._dispatch import SPAWN_WAIT_S, TENANT_IDLE_S
from qsrv.scheduler._events import Close, Connected, Send, Tick
from tests.unit.test_scheduler_state import Harness, runs


class H(Harness):
    def client(self, role: str, tenant: str) -> int:
        conn = self.next_conn
        self.next_conn += 1
        self.s.handle(Connected(conn, role, conn, tenant))
        return conn

    def tenant_driver(self, tenant: str) -> int:
        conn = self.client("driver", tenant)
        self.send(conn, RegisterFunction(b"f" * 16, b"fn"))
        return conn

    def tenant_executor(self, wid: int, tenant: str) -> tuple[int, list[Any]]:
        conn = self.client("executor", tenant)
        return conn, self.send(conn, RegisterExecutor(wid, 2000 + conn))


def spawns(actions: list[Any]) -> list[Any]:
    return [a.msg for a in actions if isinstance(a, Send)
            and isinstance(a.msg, SpawnExecutor | SpawnTenantExecutor)]


def test_a_tenants_task_waits_for_an_executor_of_its_tenant() -> None:
    h = H()
    wid, (shared,) = h.worker(cpus=2, executors=1)
    alice = h.tenant_driver("alice")
    tid, out = h.submit(alice)
    assert runs(out) == []  # the idle shared executor is not the tenant's
    assert spawns(out) == [SpawnTenantExecutor(1, "alice")]
    ex, out = h.tenant_executor(wid, "alice")
    assert runs(out) == [(ex, tid)]
    # a task of the cluster token's driver never runs on the tenant's (now idle) executor
    h.send(ex, TaskDone(tid, OK, b"v", (), [], False, 0.5))
    d = h.driver()
    t2, out = h.submit(d)
    assert runs(out) == [(shared, t2)]
    # and bob's tasks get executors of their own
    bob = h.tenant_driver("bob")
    _, out = h.submit(bob)
    assert runs(out) == [] and spawns(out) == [SpawnTenantExecutor(1, "bob")]


def test_at_the_cap_an_idle_executor_of_another_tenant_makes_room() -> None:
    h = H()
    h.s.dispatcher.max_executors_per_cpu = 0  # cap: 1 CPU x 0 + 8 executors
    _wid, execs = h.worker(cpus=1, executors=8)
    alice = h.tenant_driver("alice")
    _, out = h.submit(alice)
    kills = [a.msg for a in out if isinstance(a, Send) and isinstance(a.msg, RetireExecutor)]
    assert len(kills) == 1 and spawns(out) == [SpawnTenantExecutor(1, "alice")]
    assert any(isinstance(a, Close) and a.conn in execs for a in out)


def test_a_tenants_executor_names_only_what_it_was_given() -> None:
    h = H()
    wid, _ = h.worker(cpus=1, executors=0)
    d = h.driver()
    secret = h.oid(d)
    h.send(d, PutObject(secret, b"s", (), []))  # another tenant's object
    alice = h.tenant_driver("alice")
    given = h.oid(alice)
    h.send(alice, PutObject(given, b"g", (), []))
    tid, _ = h.submit(alice, deps=[given])
    ex, out = h.tenant_executor(wid, "alice")
    assert runs(out) == [(ex, tid)]
    # it may submit a task on what it was sent, but may not name the other object
    nested = (ex << ID_BITS) | 1
    h.send(ex, RegisterFunction(b"f" * 16, b"fn"))
    out = h.send(ex, SubmitTask(nested, b"f" * 16, b"a", (), [given], normalize_target(None),
                                0, 0.0, False, "n"))
    assert not any(isinstance(a, Close) and a.conn == ex for a in out)
    out = h.send(ex, TaskDone(tid, OK, b"v", (), [secret], False, 0.1))
    assert any(isinstance(a, Close) and a.conn == ex for a in out)


def test_a_tenants_idle_executor_is_stopped_after_a_while() -> None:
    h = H()
    h.s.recovery.heartbeat_timeout = 1e9  # the worker stays while time jumps
    wid, _ = h.worker(cpus=1, executors=0)
    alice = h.tenant_driver("alice")
    tid, _ = h.submit(alice)
    ex, _ = h.tenant_executor(wid, "alice")
    h.send(ex, TaskDone(tid, OK, b"v", (), [], False, 0.1))
    assert h.s.handle(Tick(101.0)) == []  # seen idle
    out = h.s.handle(Tick(101.0 + TENANT_IDLE_S))
    assert [a.msg.pid for a in out if isinstance(a, Send)
            and isinstance(a.msg, RetireExecutor)] == [2000 + ex]
    assert ex not in h.s.dispatcher.executors


def test_an_executor_that_never_comes_is_asked_for_again() -> None:
    h = H()
    h.s.recovery.heartbeat_timeout = 1e9
    h.worker(cpus=1, executors=0)
    alice = h.tenant_driver("alice")
    _, out = h.submit(alice)
    assert spawns(out) == [SpawnTenantExecutor(1, "alice")]
    assert spawns(h.s.handle(Tick(101.0))) == []  # asked at 101
    assert spawns(h.s.handle(Tick(120.0))) == []
    assert spawns(h.s.handle(Tick(101.0 + SPAWN_WAIT_S))) == [SpawnTenantExecutor(1, "alice")]
