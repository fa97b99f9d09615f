"""The scheduler as the object directory: values in node stores (STORED) are tracked by node,
kept (HoldObjects) and freed (FreeObjects) on their nodes, lost with their node, and draw
tasks that use them to the node that holds them. No sockets."""

from __future__ import annotations

from typing import Any

from qsrv.protocol import (
    OK,
    STORED,
    SYSTEM_ERROR,
    Cancel,
    FreeObjects,
    HoldObjects,
    ObjectsCopied,
    PutObject,
    RefUpdate,
    RunTask,
    TaskDone,
    encode_location,
)
from qsrv.scheduler._events import Disconnected, Send

from .test_scheduler_state import Harness, error_kind, learn_fast, runs, values


def where(wid: int, size: int = 1 << 20) -> bytes:
    return encode_location(wid, size, "127.0.0.1:1")


def sent(actions: list[Any], kind: type, conn: int | None = None) -> list[Any]:
    return [a.msg for a in actions if isinstance(a, Send) and isinstance(a.msg, kind)
            and (conn is None or a.conn == conn)]


def test_stored_put_is_held_on_its_node_and_freed_there() -> None:
    h = Harness()
    wid, _ = h.worker(cpus=1)
    wconn = h.worker_conn[wid]
    d = h.driver()
    oid = h.oid(d)
    out = h.send(d, PutObject(oid, where(wid), (), [], STORED))
    assert sent(out, HoldObjects, wconn) == [HoldObjects([oid])]
    obj = h.s.objects[oid]
    assert (obj.status, obj.node, obj.size) == (STORED, wid, 1 << 20)
    out = h.send(d, RefUpdate([], [oid]))
    assert sent(out, FreeObjects, wconn) == [FreeObjects([oid])]
    assert oid not in h.s.objects


def test_inline_values_never_touch_a_node() -> None:
    h = Harness()
    h.worker(cpus=1)
    d = h.driver()
    oid = h.oid(d)
    out = h.send(d, PutObject(oid, b"v", (), [], OK))
    out += h.send(d, RefUpdate([], [oid]))
    assert not sent(out, HoldObjects) and not sent(out, FreeObjects)


def test_put_naming_an_unknown_node_is_lost_and_bad_status_is_refused() -> None:
    h = Harness()
    h.worker(cpus=1)
    d = h.driver()
    oid = h.oid(d)
    h.send(d, PutObject(oid, where(99), (), [], STORED))
    assert h.s.objects[oid].status == SYSTEM_ERROR
    out = h.send(d, PutObject(h.oid(d), b"x", (), [], 7))
    assert any("status 7" in getattr(a, "reason", "") for a in out)


def test_malformed_location_closes_the_connection() -> None:
    h = Harness()
    h.worker(cpus=1)
    d = h.driver()
    out = h.send(d, PutObject(h.oid(d), b"\xc1garbage", (), [], STORED))
    assert any("malformed stored-object location" in getattr(a, "reason", "") for a in out)
    assert d not in h.s.clients


def test_stored_task_result_is_held_on_the_executors_node() -> None:
    h = Harness()
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    tid, _ = h.submit(d)
    out = h.send(ex, TaskDone(tid, STORED, where(wid), (), [], False, 0.5))
    assert sent(out, HoldObjects, h.worker_conn[wid]) == [HoldObjects([tid])]
    (v,) = values(out, d)
    assert (v.status, v.data) == (STORED, where(wid))


def test_discarded_stored_result_is_freed_at_once() -> None:
    h = Harness()
    wid, (ex,) = h.worker(cpus=1)
    d = h.driver()
    learn_fast(h, d, ex)
    first, _ = h.submit(d)
    ahead, out = h.submit(d)  # sent ahead to the busy executor
    assert runs(out) == [(ex, ahead)]
    h.send(d, Cancel(ahead))  # finished meanwhile: the value it makes is discarded
    h.send(ex, TaskDone(first, OK, b"", (), [], False, 0.001))
    out = h.send(ex, TaskDone(ahead, STORED, where(wid), (), [], False, 0.001))
    wconn = h.worker_conn[wid]
    assert sent(out, HoldObjects, wconn) == [HoldObjects([ahead])]
    assert sent(out, FreeObjects, wconn) == [FreeObjects([ahead])]
    assert values(out) == []


def test_copies_are_freed_too_and_late_copies_go_at_once() -> None:
    h = Harness()
    a, _ = h.worker(cpus=1)
    b, _ = h.worker(cpus=1)
    d = h.driver()
    oid = h.oid(d)
    h.send(d, PutObject(oid, where(a), (), [], STORED))
    h.send(h.worker_conn[b], ObjectsCopied([oid]))
    assert h.s.objects[oid].copies == [b]
    out = h.send(d, RefUpdate([], [oid]))
    assert sent(out, FreeObjects, h.worker_conn[a]) == [FreeObjects([oid])]
    assert sent(out, FreeObjects, h.worker_conn[b]) == [FreeObjects([oid])]
    late = h.send(h.worker_conn[b], ObjectsCopied([oid]))  # pulled just before the free
    assert sent(late, FreeObjects, h.worker_conn[b]) == [FreeObjects([oid])]


def test_objects_are_lost_with_their_node() -> None:
    h = Harness()
    a, _ = h.worker(cpus=1)
    b, _ = h.worker(cpus=1)
    d = h.driver()
    on_a, on_b = h.oid(d), h.oid(d)
    h.send(d, PutObject(on_a, where(a), (), [], STORED))
    h.send(d, PutObject(on_b, where(b), (), [], STORED))
    h.send(h.worker_conn[a], ObjectsCopied([on_b]))
    h.s.handle(Disconnected(h.worker_conn[a], "killed"))
    lost = h.s.objects[on_a]
    assert lost.status == SYSTEM_ERROR and error_kind(lost) == "lost"  # type: ignore[arg-type]
    assert h.s.objects[on_b].status == STORED and h.s.objects[on_b].copies == []
    # a task that needs the lost object fails with that error
    tid, out = h.submit(d, deps=[on_a])
    (v,) = values(out, d)
    assert v.object_id == tid and error_kind(v) == "lost"


def test_tasks_go_to_the_node_holding_their_largest_argument() -> None:
    h = Harness()
    a, (ex_a,) = h.worker(cpus=1)
    b, (ex_b,) = h.worker(cpus=1)
    d = h.driver()
    small, big = h.oid(d), h.oid(d)
    h.send(d, PutObject(small, where(a, 1 << 16), (), [], STORED))
    h.send(d, PutObject(big, where(b, 1 << 26), (), [], STORED))
    tid, out = h.submit(d, deps=[small, big])
    assert runs(out) == [(ex_b, tid)]
    (run,) = sent(out, RunTask, ex_b)
    assert set(run.deps) == {small, big}
    # with the holder busy, the task runs elsewhere rather than wait
    tid2, out2 = h.submit(d, deps=[big])
    assert runs(out2) == [(ex_a, tid2)]
