"""Sessions: get-or-create, durations, expiry with reasons, order and exclusivity of their
jobs, isolation between users."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

import qsrv
from qsrv.client import wait_blocking
from qsrv.errors import ConflictError, InvalidRequestError, NotFoundError
from qsrv.gateway._models import User
from qsrv.gateway._quantum import (
    JobSpec,
    QStatus,
    SessionStatus,
    StopReason,
    parse_duration,
)
from tests._support import wait_for
from tests._support.cluster import Cluster
from tests._support.gateway import ThreadedGateway
from tests.quantum_service.conftest import AER, Quantum, bell, slow


@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800.0), ("5min", 300.0), ("1h", 3600.0), ("3600s", 3600.0), (90, 90.0),
    ("90", 90.0), ("1.5h", 5400.0), ("2 minutes", 120.0), ("1d", 86400.0)])
def test_durations_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30x", "m", "", "-5m", "0", 0, -1, True, None, "1h30m",
                                 float("inf"), "5 fortnights"])
def test_bad_durations_are_clear_errors(bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="max_duration"):
        parse_duration(bad, name="max_duration")  # type: ignore[arg-type]


def test_concurrent_get_or_create_gives_one_session(q: Quantum, alice: User,
                                                    bob: User) -> None:
    results = q.gather(*(q.service.open_session(alice, AER, deduplication_id="workshop",
                                                 max_duration="30m", max_idle_duration="5min")
                         for _ in range(20)))
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert len({s.id for s, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    # From threads too, through separate calls into the loop.
    got: list[str] = []

    def open_one() -> None:
        got.append(q.open_session(alice, AER, deduplication_id="workshop")[0].id)

    threads = [threading.Thread(target=open_one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(got) == {results[0][0].id}
    # Another user, or no deduplication id: sessions of their own.
    other, created = q.open_session(bob, AER, deduplication_id="workshop")
    assert created and other.id != results[0][0].id
    a, b = q.open_session(alice, AER)[0], q.open_session(alice, AER)[0]
    assert a.id != b.id
    # A project (a vendor door's label) scopes the id: the same id there is another session,
    # shared within that project.
    labelled, created = q.open_session(alice, AER, deduplication_id="workshop", project="p1")
    assert created and labelled.id != results[0][0].id
    assert q.open_session(alice, AER, deduplication_id="workshop", project="p1")[0].id \
        == labelled.id
    page = q.sessions(alice)
    assert page.total == 4
    assert {s.id for s in page.results} == {results[0][0].id, a.id, b.id, labelled.id}
    for s in (results[0][0], other, a, b, labelled):
        q.terminate_session(s.user_id and (alice if s.user_id == alice.user_id else bob), s.id)


def test_session_starts_then_runs_and_its_options_are_checked(q: Quantum, alice: User) -> None:
    session, created = q.open_session(alice, AER, max_duration="30m", max_idle_duration="5min",
                                      name="mine", project="p1")
    assert created and session.status in (SessionStatus.STARTING, SessionStatus.RUNNING)
    session = q.wait_session(alice, session.id, 60, statuses=[SessionStatus.RUNNING])
    assert session.status is SessionStatus.RUNNING and session.started_at is not None
    assert session.max_duration_s == 1800 and session.max_idle_duration_s == 300
    assert session.name == "mine" and session.project == "p1" and session.reservation_id
    with pytest.raises(InvalidRequestError, match="max_idle_duration"):
        q.open_session(alice, AER, max_duration="5m", max_idle_duration="1h")
    with pytest.raises(InvalidRequestError, match="unknown unit"):
        q.open_session(alice, AER, max_duration="5 parsecs")
    with pytest.raises(NotFoundError, match="no platform 'nope'"):
        q.open_session(alice, "nope")
    with pytest.raises(InvalidRequestError, match="unknown session status"):
        q.sessions(alice, status="sleeping")
    stopped = q.terminate_session(alice, session.id)
    assert stopped.status is SessionStatus.STOPPED and stopped.reason is StopReason.TERMINATED
    assert stopped.terminated_at is not None
    assert q.sessions(alice, status="stopped").total == 1
    assert q.sessions(alice, status="running").total == 0
    with pytest.raises(ConflictError, match="stopped"):
        q.submit(alice, session.id, JobSpec(10, program=bell()))


def _reservation(reservation_id: str | None) -> dict[str, object] | None:
    return next((r for r in qsrv.status()["reservations"] if r["id"] == reservation_id), None)


def test_idle_expiry_releases_the_reservation(q: Quantum, alice: User) -> None:
    session, _ = q.open_session(alice, AER, max_duration="1h", max_idle_duration=1)
    session = q.wait_session(alice, session.id, 60, statuses=[SessionStatus.RUNNING])
    assert _reservation(session.reservation_id) is not None
    ended = q.wait_session(alice, session.id, 60)
    assert ended.status is SessionStatus.STOPPED and ended.reason is StopReason.IDLE
    wait_for(lambda: _reservation(session.reservation_id) is None, timeout=30)
    # A job submitted to it now is refused.
    with pytest.raises(ConflictError):
        q.submit(alice, session.id, JobSpec(10, program=bell()))


def test_max_duration_expiry_cancels_what_is_left(q: Quantum, alice: User) -> None:
    session, _ = q.open_session(alice, AER, max_duration=3, max_idle_duration=3)
    session = q.wait_session(alice, session.id, 60, statuses=[SessionStatus.RUNNING])
    # Jobs keep the idle clock moving: the maximum ends it, whatever is queued.
    jobs = [q.submit(alice, session.id, JobSpec(1, program=slow())) for _ in range(3)]
    ended = q.wait_session(alice, session.id, 120)
    assert ended.reason is StopReason.MAX_DURATION
    states = [q.job(alice, j.id) for j in jobs]
    assert all(j.status in (QStatus.DONE, QStatus.CANCELED) for j in states)
    assert any(j.status is QStatus.CANCELED and "max_duration" in j.errors[-1]
               for j in states)
    wait_for(lambda: _reservation(session.reservation_id) is None, timeout=30)


def test_jobs_run_in_order_one_at_a_time(q: Quantum, alice: User) -> None:
    session, _ = q.open_session(alice, AER)
    jobs = [q.submit(alice, session.id, JobSpec(10 + i, program=bell(), seed=i))
            for i in range(6)]
    assert [j.seq for j in jobs] == list(range(6))
    done = [q.wait_job(alice, j.id, 120) for j in jobs]
    assert all(j.status is QStatus.DONE for j in done)
    for before, after in itertools.pairwise(done):
        assert before.ended_at is not None and after.started_at is not None
        assert before.ended_at <= after.started_at  # never two at once
    counts = [q.result(alice, j.id).counts for j in done]
    assert [sum(c.values()) for c in counts] == [10 + i for i in range(6)]
    assert all(set(c) <= {"00", "11"} for c in counts)
    page = q.sessions(alice)
    assert page.results[0].last_job_at >= (done[-1].ended_at or 0)
    q.terminate_session(alice, session.id)


def executor_state(digests: list[tuple[str, str]]) -> tuple[int, list[int], list[bool]]:
    """In a reservation's executor: its process, its Aer simulators' object ids, and
    whether it has read each program (by digest) -- without building or reading anything."""
    import os

    from qsrv.quantum.engines import _aer

    return (os.getpid(), sorted(id(s) for s in _aer._simulators.values()),
            [_aer._circuits.get(d) is not None for d in digests])


def test_a_sessions_jobs_run_in_one_warm_executor(q: Quantum, alice: User) -> None:
    """The session's second job finds the first's executor as it left it: the same process,
    its simulator kept (not built again). Both jobs' round trips are printed."""
    from qsrv.quantum.engines import _aer

    session, _ = q.open_session(alice, AER)
    session = q.wait_session(alice, session.id, 60, statuses=[SessionStatus.RUNNING])
    programs = [bell(), engines_program("x q[0];\nmeasure q -> c;\n")]
    digests = [_aer._digest(p) for p in programs]
    reservation = q.service._loops[session.id]._holding.reservation
    probe = qsrv.distribute_task(executor_state).options(reservation=reservation)
    first = q.wait_job(alice, q.submit(alice, session.id, JobSpec(5, program=programs[0])).id,
                       120)
    pid, simulators, read = qsrv.get(probe(digests), timeout=60)
    assert simulators and read == [True, False]  # the first job ran here and built one
    second = q.wait_job(alice, q.submit(alice, session.id,
                                        JobSpec(5, program=programs[1])).id, 120)
    assert (first.status, second.status) == (QStatus.DONE, QStatus.DONE)
    assert qsrv.get(probe(digests), timeout=60) == (pid, simulators, [True, True])
    assert q.result(alice, second.id).counts == {"01": 5}
    took = [(j.ended_at or 0.0) - (j.started_at or 0.0) for j in (first, second)]
    print(f"session jobs' round trips: first {took[0] * 1e3:.1f} ms, "
          f"second (warm) {took[1] * 1e3:.1f} ms")
    q.terminate_session(alice, session.id)


def engines_program(body: str) -> Any:
    """A 2-qubit OpenQASM 2 program with ``body`` after its registers."""
    from qsrv.quantum import engines

    return engines.Program("qiskit.qasm2", 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
                           "qreg q[2];\ncreg c[2];\n" + body)


def test_terminate_cancels_queued_and_running_jobs(q: Quantum, alice: User) -> None:
    """Terminated while a job runs, a session is ``stopping`` (its queued jobs cancelled at
    once) until the running job's task has been cancelled and its reservation released,
    then ``stopped`` with the reason."""
    session, _ = q.open_session(alice, AER)
    first = q.submit(alice, session.id, JobSpec(1, program=slow(20, 400)))
    queued = q.submit(alice, session.id, JobSpec(1, program=bell()))
    wait_for(lambda: q.job(alice, first.id).status is QStatus.RUNNING, timeout=60)
    running = q.wait_session(alice, session.id, 1, statuses=[SessionStatus.RUNNING])
    stopping = q.terminate_session(alice, session.id)
    assert stopping.status is SessionStatus.STOPPING
    assert stopping.reason is StopReason.TERMINATED and stopping.terminated_at is None
    assert q.job(alice, queued.id).status is QStatus.CANCELED
    assert "terminated" in q.job(alice, queued.id).errors[-1]
    with pytest.raises(ConflictError, match="is stopp"):  # it takes no more jobs
        q.submit(alice, session.id, JobSpec(1, program=bell()))
    again, created = q.open_session(alice, AER)  # nor is it joined
    assert created and again.id != session.id
    stopped = q.wait_session(alice, session.id, 120)
    assert stopped.status is SessionStatus.STOPPED and stopped.reason is StopReason.TERMINATED
    assert stopped.terminated_at is not None
    first = q.job(alice, first.id)
    assert first.status is QStatus.CANCELED and "terminated" in first.errors[-1]
    assert first.ended_at is not None and first.ended_at <= stopped.terminated_at
    wait_for(lambda: _reservation(running.reservation_id) is None, timeout=30)
    q.terminate_session(alice, again.id)


def test_a_session_with_no_running_job_stops_at_once(q: Quantum, alice: User) -> None:
    session, _ = q.open_session(alice, AER)
    session = q.wait_session(alice, session.id, 60, statuses=[SessionStatus.RUNNING])
    job = q.wait_job(alice, q.submit(alice, session.id, JobSpec(3, program=bell())).id, 120)
    assert job.status is QStatus.DONE
    stopped = q.terminate_session(alice, session.id)
    assert stopped.status is SessionStatus.STOPPED and stopped.reason is StopReason.TERMINATED
    assert q.job(alice, job.id).status is QStatus.DONE  # what ended keeps its result
    wait_for(lambda: _reservation(session.reservation_id) is None, timeout=30)


def test_another_users_session_is_missing(q: Quantum, alice: User, bob: User) -> None:
    session, _ = q.open_session(alice, AER)
    for call in (q.session, q.terminate_session, q.delete_session):
        with pytest.raises(NotFoundError):
            call(bob, session.id)
    with pytest.raises(NotFoundError):
        q.submit(bob, session.id, JobSpec(10, program=bell()))
    assert q.sessions(bob).total == 0
    q.delete_session(alice, session.id)
    with pytest.raises(NotFoundError):
        q.session(alice, session.id)


@pytest.fixture
def one_cpu_cluster() -> object:
    c = Cluster()
    c.worker("solo", "--cpus", "1")
    try:
        wait_for(lambda: c.ready({"solo"}), timeout=120)
        yield c
    finally:
        c.stop()


def test_jobs_run_only_inside_the_reservation(
        one_cpu_cluster: Cluster, make_gateway: Callable[..., ThreadedGateway],
        data_dir: object) -> None:
    """The worker has one CPU and the session holds it: a plain task cannot start, the
    session's jobs run (so they run inside the reservation), and once the session ends the
    plain task runs."""
    gateway = make_gateway(cluster_address=one_cpu_cluster.address)
    q = Quantum(gateway)
    alice = q.user("alice")
    session, _ = q.open_session(alice, AER)
    session = q.wait_session(alice, session.id, 60, statuses=[SessionStatus.RUNNING])

    @qsrv.distribute_task(target={"cpu": 1})
    def plain() -> str:
        return "ran"

    ref = plain()  # this process is the gateway's driver
    jobs = [q.submit(alice, session.id, JobSpec(5, program=bell())) for _ in range(3)]
    assert all(q.wait_job(alice, j.id, 120).status is QStatus.DONE for j in jobs)
    ready, _ = wait_blocking([ref], timeout=0.5)
    assert not ready  # the reservation's capacity is the session's alone
    reservation = _reservation(session.reservation_id)
    assert reservation is not None and reservation["worker"] == "solo"
    q.terminate_session(alice, session.id)
    assert qsrv.get(ref, timeout=60) == "ran"
