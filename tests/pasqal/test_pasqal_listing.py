"""get_jobs and get_batches through pasqal-cloud: each filter, pages and totals, and paging
while other batches and jobs are being inserted."""

from __future__ import annotations

import warnings
from datetime import datetime

import pytest

from tests._support import wait_for
from tests.pasqal.conftest import Gateway, new_project, sequence

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pasqal_cloud import SDK
    from pasqal_cloud.utils.constants import BatchStatus, JobStatus
    from pasqal_cloud.utils.filters import BatchFilters, JobFilters, PaginationParams

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
JOBS_P1 = new_project()
JOBS_P2 = new_project()
BATCHES_P1 = new_project()
BATCHES_P2 = new_project()
INSERTS = new_project()


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _ids(sdk: SDK, filters: JobFilters) -> set[str]:
    page = sdk.get_jobs(filters=filters)
    assert page.total == len(page.results)
    return {j.id for j in page.results}


def _batch_ids(sdk: SDK, filters: BatchFilters) -> set[str]:
    page = sdk.get_batches(filters=filters)
    assert page.total == len(page.results)
    return {b.id for b in page.results}


def test_get_jobs_with_each_filter_and_pages(pasqal: Gateway, serialized: str) -> None:
    sdk = pasqal.sdk(project=JOBS_P1)
    # The first job (a slow sequence of its own) keeps the third waiting while it is
    # cancelled: the three end DONE, DONE, CANCELED (with the reason in its errors).
    slow = sequence(atoms=12, duration=6000, variable=False).to_abstract_repr()
    first = sdk.create_batch(serialized, [{"runs": 10, "serialized_sequence": slow},
                                          {"runs": 20, "variables": {"omega_max": 2.0}},
                                          {"runs": 30, "variables": {"omega_max": 3.0}}],
                             open=True)
    j10, j20, j30 = first.ordered_jobs
    assert sdk.cancel_job(j30.id).status == "CANCELED"
    first.close(wait=True)
    j10, j20, j30 = first.ordered_jobs
    assert [j.status for j in first.ordered_jobs] == ["DONE", "DONE", "CANCELED"]
    assert j30.errors and not j10.errors
    other = pasqal.sdk(project=JOBS_P2).create_batch(
        serialized, [{"runs": 40, "variables": {"omega_max": 4.0}}], wait=True)
    (j40,) = other.ordered_jobs
    both = [first.id, other.id]
    everything = {j10.id, j20.id, j30.id, j40.id}

    assert _ids(sdk, JobFilters(batch_id=first.id)) == {j10.id, j20.id, j30.id}
    assert _ids(sdk, JobFilters(batch_id=both)) == everything
    assert _ids(sdk, JobFilters(id=[j10.id, j40.id])) == {j10.id, j40.id}
    assert _ids(sdk, JobFilters(id=j20.id)) == {j20.id}
    assert _ids(sdk, JobFilters(batch_id=both, status=JobStatus.CANCELED)) == {j30.id}
    assert _ids(sdk, JobFilters(batch_id=both, status=[JobStatus.DONE])) == {
        j10.id, j20.id, j40.id}
    assert _ids(sdk, JobFilters(batch_id=both, min_runs=20)) == {j20.id, j30.id, j40.id}
    assert _ids(sdk, JobFilters(batch_id=both, max_runs=20)) == {j10.id, j20.id}
    assert _ids(sdk, JobFilters(batch_id=both, min_runs=15, max_runs=35)) == {j20.id, j30.id}
    assert _ids(sdk, JobFilters(project_id=JOBS_P2)) == {j40.id}
    assert _ids(sdk, JobFilters(batch_id=both, errors=True)) == {j30.id}
    assert _ids(sdk, JobFilters(batch_id=both, errors=False)) == {j10.id, j20.id, j40.id}
    assert _ids(sdk, JobFilters(batch_id=both, start_date=_when(j40.created_at))) == {j40.id}
    assert _ids(sdk, JobFilters(batch_id=both, end_date=_when(j30.created_at))) == {
        j10.id, j20.id, j30.id}
    alice_id = first.user_id
    assert _ids(sdk, JobFilters(batch_id=both, user_id=alice_id)) == everything
    assert _ids(sdk, JobFilters(batch_id=both, user_id="someone-else")) == set()

    # Pages: newest first, totals over the whole match.
    seen: list[str] = []
    for offset in (0, 2, 4):
        page = sdk.get_jobs(filters=JobFilters(batch_id=both),
                            pagination_params=PaginationParams(offset=offset, limit=2))
        assert page.total == 4 and page.offset == offset
        assert len(page.results) == (2 if offset < 4 else 0)
        seen += [j.id for j in page.results]
    assert set(seen) == everything and len(seen) == 4
    created = [_when(sdk.get_job(i).created_at) for i in seen]
    assert created == sorted(created, reverse=True)
    # A batch's jobs in their order, all pages (what Batch.ordered_jobs reads).
    ordered = sdk._client.get_batch_jobs(first.id)
    assert [j["id"] for j in ordered] == [j10.id, j20.id, j30.id]
    # Oldest first across batches and filters, page by page (the SDK's own page walker).
    url = sdk._client._get_url("get_jobs")
    oldest_first = sdk._client._request_all_pages("GET", url, params={
        "batch_id": both, "order_by": "creation_order", "order_by_direction": "ASC",
        "limit": 1})
    assert [j["id"] for j in oldest_first] == [j10.id, j20.id, j30.id, j40.id]
    done_first = sdk._client._request_all_pages("GET", url, params={
        "batch_id": both, "status": "DONE", "order_by_direction": "ASC", "limit": 2})
    assert [j["id"] for j in done_first] == [j10.id, j20.id, j40.id]


def test_get_batches_with_each_filter_and_pages(pasqal: Gateway, serialized: str) -> None:
    sdk = pasqal.sdk(project=BATCHES_P1)
    closed = sdk.create_batch(serialized, [{"runs": 5, "variables": {"omega_max": 1.0}}],
                              tags=["alpha", "beta"], wait=True)
    opened = sdk.create_batch(serialized, [], open=True, tags=["beta"])
    elsewhere = pasqal.sdk(project=BATCHES_P2).create_batch(serialized, [], open=True)
    mine = {closed.id, opened.id, elsewhere.id}
    try:
        assert _batch_ids(sdk, BatchFilters(id=list(mine))) == mine
        assert _batch_ids(sdk, BatchFilters(id=closed.id)) == {closed.id}
        assert _batch_ids(sdk, BatchFilters(project_id=BATCHES_P1)) == {closed.id, opened.id}
        assert _batch_ids(sdk, BatchFilters(project_id=[BATCHES_P1, BATCHES_P2])) == mine
        assert _batch_ids(sdk, BatchFilters(id=list(mine), status=BatchStatus.DONE)) == {
            closed.id}
        assert _batch_ids(sdk, BatchFilters(id=list(mine), open=True)) == {
            opened.id, elsewhere.id}
        assert _batch_ids(sdk, BatchFilters(id=list(mine), open=False)) == {closed.id}
        assert _batch_ids(sdk, BatchFilters(id=list(mine), tag="beta")) == {
            closed.id, opened.id}
        assert _batch_ids(sdk, BatchFilters(id=list(mine), tag="alpha")) == {closed.id}
        assert _batch_ids(sdk, BatchFilters(id=list(mine), device_type="EMU_FREE")) == mine
        assert _batch_ids(sdk, BatchFilters(id=list(mine), device_type="FRESNEL")) == set()
        assert _batch_ids(sdk, BatchFilters(id=list(mine),
                                            start_date=_when(opened.created_at))) == {
            opened.id, elsewhere.id}
        assert _batch_ids(sdk, BatchFilters(id=list(mine),
                                            end_date=_when(opened.created_at))) == {
            closed.id, opened.id}
        assert _batch_ids(sdk, BatchFilters(id=list(mine), user_id=closed.user_id)) == mine
        assert _batch_ids(sdk, BatchFilters(id=list(mine), user_id="nobody")) == set()
        pages = [sdk.get_batches(BatchFilters(id=list(mine)),
                                 PaginationParams(offset=offset, limit=2))
                 for offset in (0, 2)]
        assert [p.total for p in pages] == [3, 3]
        assert [b.id for p in pages for b in p.results] == [
            elsewhere.id, opened.id, closed.id]  # newest first
        tagged = sdk.set_batch_tags(opened.id, ["gamma"])
        assert tagged.tags == ["gamma"]
        assert _batch_ids(sdk, BatchFilters(id=list(mine), tag="gamma")) == {opened.id}
    finally:
        sdk.cancel_batches([opened.id, elsewhere.id])


def test_pages_and_totals_while_others_insert(pasqal: Gateway, serialized: str) -> None:
    """Walking pages newest first while another client adds jobs and batches between every
    two reads: each page is counted when it is read (totals grow with the inserts and end at
    the true count), and nothing that existed when the walk began is skipped."""
    sdk = pasqal.sdk(project=INSERTS)
    other = pasqal.sdk(project=INSERTS)
    target = sdk.create_batch(serialized, [{"runs": 1, "variables": {"omega_max": 1.0}}
                                           for _ in range(12)], open=True)
    made: list[str] = []

    def insert() -> None:
        other.add_jobs(target.id, [{"runs": 1, "variables": {"omega_max": 2.0}}])
        made.append(other.create_batch(serialized, [], open=True).id)

    existing_jobs = _ids(sdk, JobFilters(batch_id=target.id))
    existing_batches = _batch_ids(sdk, BatchFilters(project_id=INSERTS))
    try:
        for filters, existing, limit in ((JobFilters(batch_id=target.id), existing_jobs, 5),
                                         (BatchFilters(project_id=INSERTS), existing_batches,
                                          2)):
            seen: set[str] = set()
            totals: list[int] = []
            offset = 0
            while offset == 0 or offset < totals[-1]:
                get = sdk.get_jobs if isinstance(filters, JobFilters) else sdk.get_batches
                page = get(filters, PaginationParams(offset=offset, limit=limit))
                totals.append(page.total)
                seen |= {r.id for r in page.results}
                insert()
                offset += limit
            assert totals == sorted(totals) and totals[-1] > totals[0]
            assert existing <= seen
        assert sdk.get_jobs(JobFilters(batch_id=target.id)).total == 12 + len(made)
        assert sdk.get_batches(BatchFilters(project_id=INSERTS)).total == 1 + len(made)
    finally:
        sdk.cancel_batches([target.id, *made])


def test_pages_while_another_thread_inserts(pasqal: Gateway, serialized: str) -> None:
    """Another client adds jobs to an open batch from its own thread all the while one walks
    the batch's jobs: newest first, each page's total is at least the last one's and nothing
    that existed is skipped; oldest first (``Batch.ordered_jobs``), the jobs come in their
    order, each once, the existing ones first."""
    import threading

    project = new_project()
    sdk, other = pasqal.sdk(project=project), pasqal.sdk(project=project)
    target = sdk.create_batch(serialized, [{"runs": 1, "variables": {"omega_max": 1.0}}
                                           for _ in range(15)], open=True)
    existing = [j.id for j in target.ordered_jobs]
    stop = threading.Event()
    added: list[int] = []

    def insert() -> None:
        while not stop.is_set():
            other.add_jobs(target.id, [{"runs": 1, "variables": {"omega_max": 2.0}}])
            added.append(1)

    inserter = threading.Thread(target=insert)
    inserter.start()
    try:
        wait_for(lambda: len(added) >= 1, what="the other client inserts")
        for _ in range(3):
            seen: set[str] = set()
            totals: list[int] = []
            offset = 0
            while offset == 0 or offset < totals[-1]:
                page = sdk.get_jobs(JobFilters(batch_id=target.id),
                                    PaginationParams(offset=offset, limit=4))
                totals.append(page.total)
                assert len(page.results) <= 4
                seen |= {j.id for j in page.results}
                offset += 4
            assert totals == sorted(totals) and set(existing) <= seen
            ordered = [j["id"] for j in sdk._client.get_batch_jobs(target.id)]
            assert ordered[:len(existing)] == existing
            assert len(ordered) == len(set(ordered))
    finally:
        stop.set()
        inserter.join(60)
        sdk.cancel_batches([target.id])
    assert sdk.get_jobs(JobFilters(batch_id=target.id)).total == 15 + len(added)
    final = [j["id"] for j in sdk._client.get_batch_jobs(target.id)]
    assert final[:15] == existing and len(final) == len(set(final)) == 15 + len(added)
