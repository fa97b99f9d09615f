"""A batch's per-status job counts: kept as its jobs change (no scan of its jobs to read
them), stored (a restart keeps them), filled in for batches stored before they were kept."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from qsrv.errors import NotFoundError
from qsrv.gateway._models import User
from qsrv.gateway._quantum import JobFilters, JobSpec, QStatus
from qsrv.gateway._users import db_path
from tests._support import wait_for
from tests._support.gateway import ThreadedGateway
from tests.quantum_service.conftest import AER, Quantum, bell, slow


def _both(q: Quantum, user: User, batch_id: str) -> tuple[dict[str, int], dict[str, int]]:
    """(job_counts, the counts of the batch's jobs as read) in one turn of the gateway's
    loop: nothing changes between the two."""
    service = q.service

    async def read() -> tuple[dict[str, int], dict[str, int]]:
        jobs = service.batch(user, batch_id).jobs
        return service.job_counts(user, batch_id), dict(Counter(str(j.status) for j in jobs))

    both: tuple[dict[str, int], dict[str, int]] = q.gateway.call(read())
    return both


def _stored(path: Path) -> tuple[set[tuple[object, ...]], set[tuple[object, ...]]]:
    """(the stored counts, the counts of the stored jobs) of every batch, from the file."""
    conn = sqlite3.connect(path)
    try:
        kept = {tuple(r) for r in conn.execute(
            "SELECT batch_id, status, n FROM q_batch_counts WHERE n > 0")}
        counted = {tuple(r) for r in conn.execute(
            "SELECT batch_id, status, COUNT(*) FROM q_jobs WHERE batch_id IS NOT NULL "
            "GROUP BY batch_id, status")}
    finally:
        conn.close()
    return kept, counted


async def _set(obj: object, name: str, value: object) -> None:
    setattr(obj, name, value)


def test_job_counts_follow_the_jobs(q: Quantum, alice: User, bob: User) -> None:
    batch = q.create_batch(alice, slow(), [JobSpec(1), JobSpec(2), JobSpec(3)], platform=AER,
                           open=True)
    counts, read = _both(q, alice, batch.id)
    assert counts == read and sum(counts.values()) == 3
    wait_for(lambda: q.job(alice, batch.jobs[0].id).status is QStatus.RUNNING, timeout=60)
    counts, read = _both(q, alice, batch.id)
    assert counts == read and counts.get("RUNNING") == 1
    q.cancel_jobs(alice, JobFilters(batch_id=batch.id))
    assert _both(q, alice, batch.id) == ({"CANCELED": 3}, {"CANCELED": 3})
    again = q.retry_job(alice, batch.jobs[2].id)
    q.add_jobs(alice, batch.id, [JobSpec(4, program=bell())])
    q.close_batch(alice, batch.id)
    assert q.wait_batch(alice, batch.id, 180).status is QStatus.DONE
    assert q.job(alice, again.id).status is QStatus.DONE
    assert _both(q, alice, batch.id) == ({"CANCELED": 3, "DONE": 2},) * 2
    # Reading them does not read the batch's jobs.
    store = q.service.store

    def no_scan(*args: object, **kw: object) -> object:
        raise AssertionError("the batch's jobs were read")

    for name in ("batch_jobs", "matching_jobs", "list_jobs"):
        q.gateway.call(_set(store, name, no_scan))
    try:
        assert q.job_counts(alice, batch.id) == {"CANCELED": 3, "DONE": 2}
    finally:
        for name in ("batch_jobs", "matching_jobs", "list_jobs"):
            q.gateway.call(_set(store, name, getattr(type(store), name).__get__(store)))
    with pytest.raises(NotFoundError):
        q.job_counts(bob, batch.id)
    with pytest.raises(NotFoundError):
        q.job_counts(alice, "no-such-batch")


def test_job_counts_are_stored_and_filled_in(make_gateway: Callable[..., ThreadedGateway],
                                            data_dir: Path) -> None:
    gateway = make_gateway()
    q = Quantum(gateway)
    alice = q.user("alice")
    done = q.create_batch(alice, bell(), [JobSpec(5), JobSpec(6)], platform=AER)
    q.wait_batch(alice, done.id, 120)
    waiting = q.create_batch(alice, bell(), [JobSpec(7)], platform=AER, open=True)
    q.wait_job(alice, waiting.jobs[0].id, 120)
    q.add_jobs(alice, waiting.id, [JobSpec(8, program=slow())])  # cancelled before it ends
    q.cancel_jobs(alice, JobFilters(batch_id=waiting.id, min_shots=8))
    before = {b: q.job_counts(alice, b) for b in (done.id, waiting.id)}
    assert before == {done.id: {"DONE": 2}, waiting.id: {"DONE": 1, "CANCELED": 1}}
    gateway.stop()
    path = db_path(data_dir)
    kept, counted = _stored(path)
    assert kept == counted and len(kept) == 3

    q = Quantum(make_gateway())  # a restart keeps them
    assert {b: q.job_counts(alice, b) for b in before} == before
    q.gateway.stop()
    # A database from before the counts were kept: they are filled in from its jobs.
    conn = sqlite3.connect(path)
    conn.executescript(
        "DROP TRIGGER q_batch_counts_insert; DROP TRIGGER q_batch_counts_update; "
        "DROP TRIGGER q_batch_counts_delete; DROP TRIGGER q_batch_counts_gone; "
        "DROP TABLE q_batch_counts; DROP TABLE scw_models; DROP TABLE scw_jobs; "
        "DROP TABLE scw_sessions; PRAGMA user_version = 4;")  # as migration 4 left it
    conn.close()
    q = Quantum(make_gateway())
    assert {b: q.job_counts(alice, b) for b in before} == before
    more = q.add_jobs(alice, waiting.id, [JobSpec(9)])  # and kept from then on
    q.wait_job(alice, more.jobs[-1].id, 120)
    assert q.job_counts(alice, waiting.id) == {"DONE": 2, "CANCELED": 1}
    q.cancel_batch(alice, waiting.id)
