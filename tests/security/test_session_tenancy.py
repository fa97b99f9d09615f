"""Quantum sessions of two users never share an executor.

The quantum service runs every user's jobs through the gateway's own driver (the cluster
token: tenant ""), so tenant tags do not keep its users apart; reservations do. A session
holds a reservation of its platform; the executors dedicated to a reservation run its tasks
only and are stopped when it is released. Checked on a CLI-started cluster with the gateway
in this process: the executor of each job comes from the scheduler's task events (``qsrv
timeline``, a real process), by the job's task name.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from qsrv.gateway import GatewayConfig, add_user
from qsrv.gateway._quantum import JobSpec, QStatus, SessionStatus
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster, cli_env
from tests._support.gateway import ThreadedGateway
from tests.quantum_service.conftest import AER, Quantum, bell


@pytest.fixture
def q(cluster: Cluster, tmp_path: Path) -> Iterator[Quantum]:
    data_dir = tmp_path / "data"
    for name in ("alice", "bob"):
        add_user(data_dir, name)
    config = GatewayConfig(data_dir=data_dir, port=0, cluster_address=cluster.address,
                           cluster_token=TOKEN)
    gateway = ThreadedGateway(dataclasses.replace(config))
    try:
        yield Quantum(gateway)
    finally:
        gateway.stop()


def _executors(address: str) -> dict[str, int]:
    """Task name -> the pid of the executor that ran it, from the scheduler's task events."""
    out = subprocess.run([sys.executable, "-m", "qsrv", "timeline", "--address", address],
                         env=cli_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {e["name"]: e["tid"] for e in json.loads(out.stdout)["traceEvents"]
            if e.get("ph") == "X"}


def _executors_of(address: str, names: list[str]) -> dict[str, int]:
    """``_executors`` once it has an event for each of ``names``."""
    def seen() -> dict[str, int]:
        found = _executors(address)
        return found if all(n in found for n in names) else {}
    return wait_for(seen, what="the jobs' task events")


def _run_jobs(q: Quantum, user: object, session_id: str, n: int) -> list[str]:
    jobs = [q.submit(user, session_id, JobSpec(8, program=bell(), seed=i)) for i in range(n)]
    done = [q.wait_job(user, j.id, 120) for j in jobs]
    assert all(j.status is QStatus.DONE for j in done), [j.errors for j in done]
    return [f"quantum-job {j.id}" for j in done]


def test_two_users_sessions_on_one_platform_never_share_an_executor(
        q: Quantum, cluster: Cluster) -> None:
    alice, bob = q.user("alice"), q.user("bob")
    sessions = {}
    for user in (alice, bob):  # both open at once, on the same platform
        session, _ = q.open_session(user, AER)
        sessions[user.name] = q.wait_session(user, session.id, 60,
                                             statuses=[SessionStatus.RUNNING]).id
    names = {"alice": _run_jobs(q, alice, sessions["alice"], 3),
             "bob": _run_jobs(q, bob, sessions["bob"], 3)}
    names["alice"] += _run_jobs(q, alice, sessions["alice"], 1)  # after bob's: still its own
    ran = _executors_of(cluster.address, [n for ns in names.values() for n in ns])
    pids = {user: {ran[n] for n in ns} for user, ns in names.items()}
    assert len(pids["alice"]) == 1 and len(pids["bob"]) == 1, pids  # its reservation's one
    assert pids["alice"].isdisjoint(pids["bob"]), pids

    # Alice's session ends: its reservation's executor is stopped, never handed to bob.
    [alice_pid] = pids["alice"]
    q.terminate_session(alice, sessions["alice"])
    wait_for(lambda: not psutil.pid_exists(alice_pid),
             what="the executor of alice's released reservation to stop")
    session, _ = q.open_session(bob, AER, name="second")
    second = q.wait_session(bob, session.id, 60, statuses=[SessionStatus.RUNNING]).id
    [later] = _run_jobs(q, bob, second, 1)
    ran = _executors_of(cluster.address, [later])
    assert ran[later] != alice_pid
    q.terminate_session(bob, second)
    q.terminate_session(bob, sessions["bob"])
