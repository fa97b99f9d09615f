"""Batches: closed and open, add / close / timeout, retry, rebatch with each filter, cancel,
strict validation, idempotent submits, pushed completion, isolation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qsrv.errors import ConflictError, InvalidProgramError, InvalidRequestError, NotFoundError
from qsrv.gateway._models import User
from qsrv.gateway._quantum import (
    BatchFilters,
    JobFilters,
    JobSpec,
    Pagination,
    QStatus,
    SessionStatus,
    StopReason,
)
from qsrv.quantum import engines
from tests._support import wait_for
from tests._support.gateway import ThreadedGateway
from tests.quantum_service.conftest import AER, Quantum, bell, rotation, slow


def test_closed_batch_runs_its_jobs_in_order(q: Quantum, alice: User) -> None:
    batch = q.create_batch(alice, rotation(), [
        JobSpec(50, {"theta": 0.0}, seed=1), JobSpec(60, {"theta": 3.14159}, seed=2),
        JobSpec(70, {"theta": 1.0}, seed=3)], platform=AER, tags=["a", "b"],
        configuration={"note": "x"}, project="p")
    assert not batch.open and batch.status in (QStatus.PENDING, QStatus.RUNNING)
    assert [j.seq for j in batch.jobs] == [0, 1, 2] and batch.tags == ("a", "b")
    done = q.wait_batch(alice, batch.id, 120)
    assert done.status is QStatus.DONE and done.ended_at is not None
    assert [j.status for j in done.jobs] == [QStatus.DONE] * 3
    assert q.result(alice, done.jobs[0].id).counts == {"0": 50}
    assert q.result(alice, done.jobs[1].id).counts == {"1": 60}
    assert q.result(alice, done.jobs[2].id).native  # Aer's own result, as JSON
    assert done.configuration == {"note": "x"} and done.project == "p"
    # Its own session ended with it.
    session = q.session(alice, done.session_id)
    assert session.internal and session.status is SessionStatus.STOPPED
    assert session.reason is StopReason.COMPLETED
    assert q.sessions(alice).total == 0  # a batch's own session is not listed by default
    assert q.sessions(alice, filters=None).total == 0


def test_open_batch_add_close(q: Quantum, alice: User) -> None:
    batch = q.create_batch(alice, rotation(), [JobSpec(10, {"theta": 0.1})], platform=AER,
                           open=True)
    assert batch.open
    first = q.wait_job(alice, batch.jobs[0].id, 120)
    assert first.status is QStatus.DONE
    # The next job derived from the previous result (a variational loop).
    counts = q.result(alice, first.id).counts
    theta = 0.1 + counts.get("1", 0) / 10
    batch = q.add_jobs(alice, batch.id, [JobSpec(10, {"theta": theta})])
    assert len(batch.jobs) == 2 and batch.jobs[1].variables == {"theta": theta}
    assert q.wait_job(alice, batch.jobs[1].id, 120).status is QStatus.DONE
    assert q.batch(alice, batch.id).status is QStatus.RUNNING  # open: not done
    closed = q.close_batch(alice, batch.id)
    assert not closed.open
    assert q.wait_batch(alice, batch.id, 60).status is QStatus.DONE
    with pytest.raises(ConflictError, match="open batches only"):
        q.add_jobs(alice, batch.id, [JobSpec(10, {"theta": 0.2})])
    assert q.close_batch(alice, batch.id).status is QStatus.DONE  # closing again: no change


def test_open_batch_times_out_when_idle(make_gateway: Callable[..., ThreadedGateway]) -> None:
    q = Quantum(make_gateway(quantum_batch_timeout_s=1.0))
    alice = q.user("alice")
    batch = q.create_batch(alice, bell(), [JobSpec(5)], platform=AER, open=True)
    ended = q.wait_batch(alice, batch.id, 120)  # woken when it times out
    assert ended.status is QStatus.TIMED_OUT and not ended.open
    assert ended.jobs[0].status is QStatus.DONE  # what ran keeps its result
    with pytest.raises(ConflictError):
        q.add_jobs(alice, batch.id, [JobSpec(5)])
    assert q.session(alice, ended.session_id).status is SessionStatus.STOPPED
    # An empty open batch times out too.
    empty = q.create_batch(alice, bell(), [], platform=AER, open=True)
    assert q.wait_batch(alice, empty.id, 120).status is QStatus.TIMED_OUT


def test_retry_in_an_open_batch(q: Quantum, alice: User) -> None:
    batch = q.create_batch(alice, bell(), [JobSpec(5, seed=4)], platform=AER, open=True)
    job = q.wait_job(alice, batch.jobs[0].id, 120)
    again = q.retry_job(alice, job.id)
    assert again.parent_id == job.id and again.batch_id == batch.id and again.seq == 1
    assert (again.shots, again.seed, again.program) == (job.shots, job.seed, job.program)
    again = q.wait_job(alice, again.id, 120)
    assert q.result(alice, again.id).counts == q.result(alice, job.id).counts  # same seed
    q.close_batch(alice, batch.id)
    q.wait_batch(alice, batch.id, 60)
    with pytest.raises(ConflictError, match="open batches only"):
        q.retry_job(alice, job.id)


def test_rebatch_with_each_filter(q: Quantum, alice: User) -> None:
    batch = q.create_batch(alice, bell(), [JobSpec(s) for s in (10, 20, 30, 40)], platform=AER,
                           open=True)
    with pytest.raises(ConflictError, match="open"):
        q.rebatch(alice, batch.id)
    q.cancel_jobs(alice, JobFilters(id=batch.jobs[3].id))
    q.close_batch(alice, batch.id)
    done = q.wait_batch(alice, batch.id, 120)
    jobs = done.jobs
    assert [j.status for j in jobs] == [QStatus.DONE] * 3 + [QStatus.CANCELED]
    created = [j.created_at for j in jobs]

    def shots_of(filters: JobFilters | None) -> list[int]:
        new = q.rebatch(alice, batch.id, filters)
        assert new.parent_id == batch.id and not new.open
        assert all(j.parent_id in {o.id for o in jobs} for j in new.jobs)
        return [j.shots for j in new.jobs]

    assert shots_of(None) == [10, 20, 30, 40]
    assert shots_of(JobFilters(id=[jobs[0].id, jobs[2].id])) == [10, 30]
    assert shots_of(JobFilters(status=QStatus.CANCELED)) == [40]
    assert shots_of(JobFilters(status=["DONE"])) == [10, 20, 30]
    assert shots_of(JobFilters(min_shots=25)) == [30, 40]
    assert shots_of(JobFilters(max_shots=20)) == [10, 20]
    assert shots_of(JobFilters(start_date=created[0], end_date=created[0])) == [10, 20, 30, 40]
    with pytest.raises(InvalidRequestError, match="unknown status"):
        q.rebatch(alice, batch.id, JobFilters(status="SLEEPING"))
    children = q.batches(alice, BatchFilters(parent_id=batch.id))
    assert children.total == 7
    rerun = q.wait_batch(alice, children.results[0].id, 120)
    assert rerun.status is QStatus.DONE


def test_rebatch_matching_no_job_is_an_empty_done_batch(q: Quantum, alice: User) -> None:
    """As pasqal-cloud's ``sdk.rebatch(batch.id, RebatchFilters(status=JobStatus.ERROR))``
    on a batch with no job in error: an empty, closed batch, DONE, its parent set."""
    batch = q.create_batch(alice, bell(), [JobSpec(10), JobSpec(20)], platform=AER)
    assert q.wait_batch(alice, batch.id, 120).status is QStatus.DONE
    for filters in (JobFilters(status=QStatus.ERROR), JobFilters(min_shots=1000)):
        empty = q.rebatch(alice, batch.id, filters)
        assert empty.parent_id == batch.id and empty.jobs == ()
        assert not empty.open and empty.status is QStatus.DONE
        assert empty.ended_at is not None
        assert q.job_counts(alice, empty.id) == {}
        assert q.wait_batch(alice, empty.id, 5).status is QStatus.DONE
        session = q.session(alice, empty.session_id)  # never reserved anything
        assert session.status is SessionStatus.STOPPED and session.reservation_id is None
        assert session.reason is StopReason.COMPLETED and session.internal
        with pytest.raises(ConflictError, match="open batches only"):
            q.add_jobs(alice, empty.id, [JobSpec(5)])
    children = q.batches(alice, BatchFilters(parent_id=batch.id, status=QStatus.DONE))
    assert children.total == 2


def test_rebatch_by_dates(q: Quantum, alice: User) -> None:
    batch = q.create_batch(alice, bell(), [JobSpec(10)], platform=AER, open=True)
    q.add_jobs(alice, batch.id, [JobSpec(20)])
    q.close_batch(alice, batch.id)
    jobs = q.wait_batch(alice, batch.id, 120).jobs
    first, second = jobs[0].created_at, jobs[1].created_at
    assert first < second
    assert [j.shots for j in q.rebatch(alice, batch.id, JobFilters(end_date=first)).jobs] == [10]
    assert [j.shots for j in q.rebatch(alice, batch.id,
                                       JobFilters(start_date=second)).jobs] == [20]


def test_cancel_batch_and_jobs(q: Quantum, alice: User) -> None:
    batch = q.create_batch(alice, slow(), [JobSpec(1), JobSpec(2), JobSpec(3)], platform=AER)
    wait_for(lambda: q.job(alice, batch.jobs[0].id).status is QStatus.RUNNING, timeout=60)
    running = q.cancel_job(alice, batch.jobs[0].id)  # a running job
    assert running.status is QStatus.CANCELED
    cancelled = q.cancel_jobs(alice, JobFilters(batch_id=batch.id, min_shots=3))
    assert [j.shots for j in cancelled] == [3]
    assert q.wait_job(alice, batch.jobs[1].id, 120).status is QStatus.DONE
    assert q.wait_batch(alice, batch.id, 60).status is QStatus.DONE
    with pytest.raises(ConflictError, match="already ended"):
        q.cancel_job(alice, batch.jobs[1].id)
    other = q.create_batch(alice, slow(), [JobSpec(1), JobSpec(2)], platform=AER, open=True)
    ended = q.cancel_batch(alice, other.id)
    assert ended.status is QStatus.CANCELED and not ended.open
    assert all(j.status is QStatus.CANCELED for j in ended.jobs)
    # its own session ends with it: 'stopping' while a job it had started is being cancelled
    assert q.session(alice, other.session_id).status in (SessionStatus.STOPPING,
                                                         SessionStatus.STOPPED)
    wait_for(lambda: q.session(alice, other.session_id).status is SessionStatus.STOPPED,
             timeout=60)


def test_strict_validation_refuses_with_the_reason(q: Quantum, alice: User) -> None:
    cases: list[tuple[engines.Program, JobSpec, str]] = [
        (rotation(), JobSpec(10, {}), "missing variable"),
        (rotation(), JobSpec(10, {"theta": 1, "phi": 2}), "unknown variable"),
        (rotation(), JobSpec(10, {"theta": "x"}), "must be a number"),
        (bell(), JobSpec(10**8), "shots"),
        (bell(), JobSpec(0), "shots"),
    ]
    platform = q.platform(AER)
    wide = "\n".join(['OPENQASM 2.0;', 'include "qelib1.inc";',
                      f'qreg q[{platform.max_qubits + 1}];', 'h q[0];'])
    cases.append((engines.Program("qiskit.qasm2", wide), JobSpec(10), "qubits"))
    cases.append((engines.Program("qiskit.qasm2", "OPENQASM 2.0; nonsense"), JobSpec(10), ""))
    for program, spec, reason in cases:
        with pytest.raises(InvalidRequestError, match=reason or None):
            q.create_batch(alice, program, [spec], platform=AER)
    with pytest.raises(InvalidProgramError):
        q.create_batch(alice, rotation(), [JobSpec(10, {"theta": 1}), JobSpec(10, {})],
                       platform=AER)
    with pytest.raises(InvalidRequestError, match="platform"):
        q.create_batch(alice, bell(), [JobSpec(10)])
    # Engine options (a batch's configuration) are checked before anything queues.
    for options, reason in (({"precison": "single"}, r"unknown aer option.*'precison'"),
                            ({"memory": "yes"}, "memory must be true or false"),
                            ([1], "must be a JSON object")):
        for jobs in ([JobSpec(10)], []):
            with pytest.raises(InvalidRequestError, match=reason):
                q.create_batch(alice, bell(), jobs, platform=AER, open=True,
                               configuration={"options": options})
    with pytest.raises(NotFoundError, match="no platform"):
        q.create_batch(alice, bell(), [JobSpec(10)], platform="aer.quantum.magic")
    # Nothing refused was stored.
    assert q.batches(alice).total == 0 and q.jobs(alice).total == 0
    batch = q.create_batch(alice, rotation(), [JobSpec(10, {"theta": 1})], platform=AER,
                           open=True)
    with pytest.raises(InvalidRequestError, match="missing variable"):
        q.add_jobs(alice, batch.id, [JobSpec(10, {})])
    assert len(q.batch(alice, batch.id).jobs) == 1
    q.cancel_batch(alice, batch.id)


def test_idempotent_submits(q: Quantum, alice: User, bob: User) -> None:
    first = q.create_batch(alice, bell(), [JobSpec(5)], platform=AER, open=True,
                           idempotency_key="k1")
    again = q.create_batch(alice, bell(), [JobSpec(5)], platform=AER, open=True,
                           idempotency_key="k1")
    assert again.id == first.id and len(again.jobs) == 1
    results = q.gather(*(q.service.create_batch(alice, bell(), [JobSpec(5)], platform=AER,
                                                idempotency_key="k2") for _ in range(5)))
    assert len({b.id for b in results}) == 1
    added = q.add_jobs(alice, first.id, [JobSpec(6)], idempotency_key="a1")
    added_again = q.add_jobs(alice, first.id, [JobSpec(6)], idempotency_key="a1")
    assert len(added.jobs) == len(added_again.jobs) == 2
    with pytest.raises(ConflictError, match="idempotency key"):
        q.add_jobs(alice, first.id, [JobSpec(6)], idempotency_key="k1")
    # Keys are per user.
    assert q.create_batch(bob, bell(), [JobSpec(5)], platform=AER,
                          idempotency_key="k1").id != first.id
    assert q.batches(alice).total == 2
    q.cancel_batch(alice, first.id)


def test_pushed_completion(q: Quantum, alice: User) -> None:
    batch = q.create_batch(alice, bell(), [JobSpec(5), JobSpec(6)], platform=AER)
    waiters = q.gather(q.service.wait_job(alice, batch.jobs[1].id, 120),
                       q.service.wait_batch(alice, batch.id, 120),
                       q.service.wait_session(alice, batch.session_id, 120))
    job, done, session = waiters
    assert job.status is QStatus.DONE and done.status is QStatus.DONE
    assert session.status is SessionStatus.STOPPED
    # A wait that times out returns the record as it is.
    open_batch = q.create_batch(alice, bell(), [], platform=AER, open=True)
    assert q.wait_batch(alice, open_batch.id, 0.2).status is QStatus.PENDING
    q.cancel_batch(alice, open_batch.id)
    # No polling: a waiter reads the job once, then once per change of it (started, ended),
    # however long the job runs.
    service = q.service
    reads: list[str] = []
    original = service.job

    def counting(user: User, job_id: str) -> object:
        reads.append(job_id)
        return original(user, job_id)

    slow_batch = q.create_batch(alice, slow(), [JobSpec(1)], platform=AER)
    gateway = q.gateway
    gateway.call(_set(service, "job", counting))
    try:
        ended = q.wait_job(alice, slow_batch.jobs[0].id, 120)
    finally:
        gateway.call(_set(service, "job", original))
    assert ended.status is QStatus.DONE
    assert 1 <= len(reads) <= 4, reads


async def _set(obj: object, name: str, value: object) -> None:
    setattr(obj, name, value)


def test_listing_filters_pages_and_totals_under_inserts(q: Quantum, alice: User,
                                                        bob: User) -> None:
    batch = q.create_batch(alice, bell(), [JobSpec(s) for s in range(1, 31)], platform=AER,
                           open=True, tags=["t"])
    page = q.jobs(alice, JobFilters(batch_id=batch.id), None)
    assert page.total == 30 and len(page.results) == 30
    assert [j.shots for j in page.results] == list(range(30, 0, -1))  # newest first
    # Page through while jobs are being inserted (one lands between each two pages, and
    # more concurrently): with the first page's snapshot, pages neither repeat nor skip, and
    # the total stays.
    service = q.service
    totals: list[int] = []

    async def page_through() -> list[str]:
        first = service.jobs(alice, None, Pagination(offset=0, limit=7))
        seen = [j.id for j in first.results]
        offset = 7
        while offset < first.total:
            await service.add_jobs(alice, batch.id, [JobSpec(99)])
            page = service.jobs(alice, None, Pagination(offset, 7, first.snapshot))
            totals.append(page.total)
            totals.append(service.jobs(alice, None, Pagination(0, 1)).total)  # unpinned
            seen += [j.id for j in page.results]
            offset += 7
        return seen

    async def insert() -> None:
        for _ in range(6):
            await service.add_jobs(alice, batch.id, [JobSpec(99)])

    seen, _ = q.gather(page_through(), insert())
    assert len(seen) == len(set(seen)) == 30
    assert set(totals[::2]) == {30}  # pinned pages: the snapshot's total
    assert totals[1::2] == sorted(totals[1::2]) and totals[-1] > 30  # inserts landed
    assert q.jobs(alice).total == 40
    with pytest.raises(InvalidRequestError, match="limit"):
        Pagination(limit=101)
    with pytest.raises(InvalidRequestError, match="limit"):
        Pagination(limit=0)
    with pytest.raises(InvalidRequestError, match="offset"):
        Pagination(offset=-1)
    assert q.jobs(alice, JobFilters(min_shots=20, max_shots=25)).total == 6
    assert q.jobs(alice, JobFilters(status=[QStatus.PENDING, QStatus.RUNNING, QStatus.DONE]
                                    )).total == 40
    assert q.jobs(bob).total == 0
    assert q.batches(alice, BatchFilters(tag="t")).total == 1
    assert q.batches(alice, BatchFilters(tag="u")).total == 0
    assert q.batches(alice, BatchFilters(open=True, status="RUNNING")).total in (0, 1)
    q.cancel_batch(alice, batch.id)
    assert q.jobs(alice, JobFilters(errors=True)).total == 40 - q.jobs(
        alice, JobFilters(status="DONE")).total
    assert q.batches(alice, BatchFilters(status=QStatus.CANCELED)).total == 1


def test_another_users_batch_and_jobs_are_missing(q: Quantum, alice: User, bob: User) -> None:
    batch = q.create_batch(alice, bell(), [JobSpec(5)], platform=AER, open=True)
    for call in (q.batch, q.close_batch, q.cancel_batch):
        with pytest.raises(NotFoundError):
            call(bob, batch.id)
    for call in (q.job, q.cancel_job, q.retry_job, q.result):
        with pytest.raises(NotFoundError):
            call(bob, batch.jobs[0].id)
    with pytest.raises(NotFoundError):
        q.add_jobs(bob, batch.id, [JobSpec(5)])
    assert q.cancel_jobs(bob, JobFilters(batch_id=batch.id)) == []
    q.cancel_batch(alice, batch.id)
