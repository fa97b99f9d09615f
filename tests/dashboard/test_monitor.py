"""The monitor role over real sockets: it watches, and can do nothing else."""

from __future__ import annotations

import time
from typing import Any

import pytest

import qsrv
from qsrv.dashboard import MonitorClient
from qsrv.errors import AuthenticationError, ConnectionLostError, ProtocolError
from qsrv.protocol import (
    Cancel,
    PutObject,
    RefUpdate,
    RegisterExecutor,
    RegisterFunction,
    RegisterWorker,
    StatusRequest,
    SubmitTask,
    Subscribe,
    job_credential,
)
from qsrv.transport import SyncConnection
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster

FORBIDDEN: list[Any] = [
    RegisterFunction(b"f" * 16, b"payload"),
    SubmitTask(1, b"f" * 16, b"args", (), [], {}, 0, 0.0, False, "t"),
    PutObject(1, b"value", (), []),
    Subscribe([1]),
    RefUpdate([1], []),
    Cancel(1),
    StatusRequest(1),
    RegisterWorker("intruder", {"cpu": 1000}, [], 1, {}),
    RegisterExecutor(1, 1),
]


def _closed(conn: SyncConnection, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn.receive(0.5)
        except (ConnectionLostError, ProtocolError):
            return True
    return False


@pytest.mark.parametrize("msg", FORBIDDEN, ids=lambda m: type(m).__name__)
def test_a_monitor_cannot_submit_read_or_register(cluster: Cluster, msg: Any) -> None:
    conn = SyncConnection(cluster.address, TOKEN, "monitor")
    try:
        conn.send([msg])
        assert _closed(conn), f"a monitor's {type(msg).__name__} left its connection open"
    finally:
        conn.close()
    status = cluster.status()  # the scheduler serves on, and nothing was registered
    assert sorted(w["name"] for w in status["workers"]) == ["w1", "w2"]


def test_a_monitor_sees_events_but_never_values(driver: Cluster) -> None:
    @qsrv.distribute_task
    def secret(i: int) -> str:
        return f"the-secret-value-{i}"

    assert qsrv.get([secret(i) for i in range(5)])[0] == "the-secret-value-0"
    with MonitorClient(driver.address, TOKEN) as monitor:
        update = monitor.snapshot()
    names = [e[3] for e in update["events"]]
    assert sum(1 for n in names if n.endswith("secret")) >= 5
    assert "the-secret-value" not in repr(update)
    assert {w["name"] for w in update["status"]["workers"]} == {"w1", "w2"}


def test_a_wrong_token_or_a_job_credential_is_refused(cluster: Cluster) -> None:
    with pytest.raises((AuthenticationError, ConnectionLostError, ProtocolError)):
        SyncConnection(cluster.address, "not-the-token", "monitor")
    credential = job_credential(TOKEN, "alice", "job-1", time.time() + 600)
    with pytest.raises((AuthenticationError, ConnectionLostError, ProtocolError)):
        conn = SyncConnection(cluster.address, credential, "monitor")
        try:  # refused at the handshake, or closed right after it
            assert _closed(conn)
            raise ConnectionLostError("closed")
        finally:
            conn.close()


def test_a_monitor_follows_updates(cluster: Cluster) -> None:
    with MonitorClient(cluster.address, TOKEN) as monitor:
        monitor.request(0.0, follow=0.2)
        seen: list[dict[str, Any]] = []
        wait_for(lambda: seen.extend(monitor.receive(0.5)) or len(seen) >= 3, 30,
                 "three updates")
    assert all("status" in u and "totals" in u for u in seen)
