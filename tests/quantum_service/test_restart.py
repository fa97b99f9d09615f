"""A gateway restart loses nothing: sessions keep their state and deadlines, queued jobs run,
a job that was running runs again, open batches stay open."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from qsrv.gateway._quantum import JobSpec, QStatus, SessionStatus, StopReason
from tests._support import wait_for
from tests._support.gateway import ThreadedGateway
from tests.quantum_service.conftest import AER, Quantum, bell, slow


def test_restart_in_the_middle_of_a_batch(make_gateway: Callable[..., ThreadedGateway]) -> None:
    gateway = make_gateway()
    q = Quantum(gateway)
    alice = q.user("alice")
    batch = q.create_batch(alice, slow(16, 40), [JobSpec(n) for n in (1, 2, 3, 4)],
                           platform=AER)
    kept, _ = q.open_session(alice, AER, deduplication_id="kept", max_duration="1h",
                             max_idle_duration="30m")
    kept = q.wait_session(alice, kept.id, 60, statuses=[SessionStatus.RUNNING])
    short, _ = q.open_session(alice, AER, max_duration="1h", max_idle_duration=1)
    short = q.wait_session(alice, short.id, 60, statuses=[SessionStatus.RUNNING])
    open_batch = q.create_batch(alice, bell(), [JobSpec(5)], platform=AER, open=True)
    wait_for(lambda: q.job(alice, batch.jobs[1].id).status is QStatus.RUNNING, timeout=120)
    gateway.stop()
    stopped_at = time.time()
    # While it is down, the short session's idle deadline passes.
    deadline = short.deadline()
    assert deadline is not None
    wait_for(lambda: time.time() > deadline + 0.1, timeout=30)

    q = Quantum(make_gateway())
    alice = q.user("alice")
    running = q.job(alice, batch.jobs[1].id)
    assert running.status in (QStatus.PENDING, QStatus.RUNNING)  # it runs again
    done = q.wait_batch(alice, batch.id, 180)
    assert done.status is QStatus.DONE
    assert [j.status for j in done.jobs] == [QStatus.DONE] * 4
    assert [sum(q.result(alice, j.id).counts.values()) for j in done.jobs] == [1, 2, 3, 4]
    assert done.jobs[1].started_at is not None and done.jobs[1].started_at > stopped_at
    # The sessions kept their state and deadlines.
    again = q.session(alice, kept.id)
    assert again.status is SessionStatus.RUNNING and again.started_at == kept.started_at
    assert q.open_session(alice, AER, deduplication_id="kept")[0].id == kept.id
    ended = q.session(alice, short.id)
    assert ended.status is SessionStatus.STOPPED and ended.reason is StopReason.IDLE
    # The open batch is still open and runs what it is given.
    reopened = q.add_jobs(alice, open_batch.id, [JobSpec(6)])
    assert q.wait_job(alice, reopened.jobs[1].id, 120).status is QStatus.DONE
    q.close_batch(alice, open_batch.id)
    assert q.wait_batch(alice, open_batch.id, 60).status is QStatus.DONE
    q.terminate_session(alice, kept.id)


_SCHEDULER_RESTART = """
import sys, tempfile, pathlib
from qsrv.gateway import GatewayConfig, add_user
from qsrv.gateway._quantum import JobSpec, QStatus, SessionStatus
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster
from tests._support.gateway import ThreadedGateway
from tests.quantum_service.conftest import AER, Quantum, bell, slow

cluster = Cluster()
cluster.worker("w", "--cpus", "2")
gateway = None
try:
    wait_for(lambda: cluster.ready({"w"}), timeout=120)
    data = pathlib.Path(sys.argv[1])
    add_user(data, "alice")
    gateway = ThreadedGateway(GatewayConfig(data_dir=data, port=0,
                                            cluster_address=cluster.address,
                                            cluster_token=TOKEN))
    q = Quantum(gateway)
    alice = q.user("alice")
    session, _ = q.open_session(alice, AER)
    session = q.wait_session(alice, session.id, 60, statuses=[SessionStatus.RUNNING])
    first = q.submit(alice, session.id, JobSpec(1, program=slow(16, 60)))
    wait_for(lambda: q.job(alice, first.id).status is QStatus.RUNNING, timeout=60)
    cluster.start_scheduler(int(cluster.address.rsplit(":", 1)[1]))
    second = q.submit(alice, session.id, JobSpec(5, program=bell()))
    first = q.wait_job(alice, first.id, 120)
    assert first.status is QStatus.DONE, first.status
    assert any("reservation was lost" in e for e in first.errors), first.errors
    assert q.wait_job(alice, second.id, 120).status is QStatus.DONE
    after = q.session(alice, session.id)
    assert after.status is SessionStatus.RUNNING, after.status
    assert after.reservation_id != session.reservation_id  # a new reservation
    q.terminate_session(alice, session.id)
    print("scheduler restart: ok", flush=True)
finally:
    if gateway is not None:
        gateway.stop()
    cluster.stop()
"""


def test_scheduler_restart_runs_the_lost_job_again(tmp_path: Path) -> None:
    """The scheduler restarts while a session's job runs: the gateway's driver reconnects,
    the session reserves again (waiting while no worker is back) and the job runs again.

    In a process of its own, whose driver is the gateway's alone: the scheduler it restarts
    is that process's cluster, and nothing else in the test run reconnects with it."""
    out = subprocess.run([sys.executable, "-c", _SCHEDULER_RESTART, str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert "scheduler restart: ok" in out.stdout, out.stderr[-4000:]
