"""A gateway restart loses nothing: sessions keep their state and deadlines, queued jobs run,
a job that was running runs again, open batches stay open."""

from __future__ import annotations

import time
from collections.abc import Callable

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
