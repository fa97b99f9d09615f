"""pasqal-cloud's batch flows against a qsrv gateway: the issue's snippet, results equal to
pulser-simulation run directly, open batches (add, retry, close), rebatch with each filter,
cancelling a batch, jobs by filter and a running job."""

from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests._support import wait_for
from tests.pasqal.conftest import Gateway, new_project, sequence, simulate

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pasqal_cloud import SDK
    from pasqal_cloud.device import DeviceTypeName, EmuFreeConfig
    from pasqal_cloud.errors import JobCancellingError, JobCreationError
    from pasqal_cloud.utils.constants import BatchStatus, JobStatus
    from pasqal_cloud.utils.filters import (
        CancelJobFilters,
        JobFilters,
        RebatchFilters,
    )

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


# The issue's snippet, word for word as a user writes it (its imports included), run as it
# stands with TOKEN, PROJECT, GATEWAY and ``sequence`` given.
SNIPPET = (Path(__file__).parent / "issue_snippet.txt").read_text()


def test_the_issue_snippet_runs_unmodified(pasqal: Gateway,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from pasqal_cloud.utils.filters import BatchFilters

    project = new_project()
    names: dict[str, Any] = {"TOKEN": pasqal.alice_token, "PROJECT": project,
                             "GATEWAY": pasqal.url, "sequence": sequence()}
    exec(compile(SNIPPET, "the issue's snippet", "exec"), names)
    printed = capsys.readouterr().out.splitlines()
    sdk, batch, open_batch = names["sdk"], names["batch"], names["open_batch"]

    assert batch.status == "DONE" and not batch.open and batch.project_id == project
    jobs = batch.ordered_jobs
    assert [job.runs for job in jobs] == [20, 50]
    assert printed[:2] == [f"{job.id} DONE {job.result}" for job in jobs]
    for job in jobs:
        assert job.status == "DONE" and job.batch_id == batch.id
        assert sum(job.result.values()) == job.runs
        assert all(len(bits) == 2 and set(bits) <= {"0", "1"} for bits in job.result)
    # The open batch: its job, the one added, the retry of the first; closed, it ends DONE.
    assert open_batch.device_type == "EMU_FREE" and not open_batch.open
    assert [(j.runs, j.variables, j.status) for j in open_batch.ordered_jobs] == [
        (20, {"omega_max": 6}, "DONE"), (50, {"omega_max": 10.5}, "DONE"),
        (20, {"omega_max": 6}, "DONE")]
    wait_for(lambda: sdk.get_batch_status(open_batch.id) is BatchStatus.DONE,
             what="the closed batch is DONE")
    # The rebatch of the ERROR jobs of a batch with none: an empty batch, closed and DONE.
    batches = sdk.get_batches(BatchFilters(project_id=project)).results
    assert len(batches) == 3
    rebatched = batches[0]  # newest first
    assert rebatched.parent_id == batch.id and rebatched.status == "DONE"
    assert not rebatched.open and rebatched.ordered_jobs == []
    assert sdk.get_batch_status(rebatched.id) is BatchStatus.DONE
    # The page of the batch's jobs, as printed.
    page = names["page"]
    assert page.total == 2 and {j.id for j in page.results} == {j.id for j in jobs}
    assert printed[2] == f"{page.total} {[j.id for j in page.results]}"
    assert set(names["specs"]) == {"EMU_FREE"}


def test_closed_batch_results_equal_pulser_simulation_with_the_same_seed(
        sdk: SDK) -> None:
    seq = sequence(atoms=3, duration=300)
    jobs: list[dict[str, Any]] = [{"runs": 40, "variables": {"omega_max": 6}},
            {"runs": 70, "variables": {"omega_max": 10.5}}]
    batch = sdk.create_batch(seq.to_abstract_repr(), jobs, device_type=DeviceTypeName.EMU_FREE,
                             configuration=EmuFreeConfig(extra_config={"seed": 1234}),
                             wait=True)
    assert batch.status == "DONE"
    for job, spec in zip(batch.ordered_jobs, jobs, strict=True):
        expected = simulate(seq, spec["runs"], 1234, **spec["variables"])
        assert job.result == expected
        assert job.full_result is not None and job.full_result["counter"] == expected
    # The job's own view agrees with the batch's.
    again = sdk.get_job(batch.ordered_jobs[1].id)
    assert again.status == "DONE" and again.result == batch.ordered_jobs[1].result
    assert again.sequence is None  # it runs its batch's sequence


def test_a_job_with_its_own_sequence(sdk: SDK) -> None:
    batch_seq = sequence(atoms=2)
    own = sequence(atoms=3, variable=False)
    batch = sdk.create_batch(
        batch_seq.to_abstract_repr(),
        [{"runs": 10, "variables": {"omega_max": 6}},
         {"runs": 15, "serialized_sequence": own.to_abstract_repr()}],
        configuration=EmuFreeConfig(extra_config={"seed": 5}), wait=True)
    first, second = batch.ordered_jobs
    assert first.result == simulate(batch_seq, 10, 5, omega_max=6)
    assert second.result == simulate(own, 15, 5)
    assert sdk.get_job(second.id).sequence == own.to_abstract_repr()
    # Retried in an open batch, a job keeps its own sequence.
    opened = sdk.create_batch(batch_seq.to_abstract_repr(),
                              [{"runs": 15, "serialized_sequence": own.to_abstract_repr()}],
                              open=True, configuration=EmuFreeConfig(extra_config={"seed": 5}))
    opened.retry(opened.ordered_jobs[0], wait=True)
    retried = opened.ordered_jobs[1]
    assert sdk.get_job(retried.id).sequence == own.to_abstract_repr()
    assert retried.result == simulate(own, 15, 5)
    opened.close()


def test_open_batch_add_retry_close(sdk: SDK, serialized: str) -> None:
    batch = sdk.create_batch(serialized, [], open=True)
    assert batch.open and batch.status in ("PENDING", "RUNNING")
    batch.add_jobs([{"runs": 5, "variables": {"omega_max": 1.0}},
                    {"runs": 6, "variables": {"omega_max": 2.0}}])
    batch.add_jobs([{"runs": 7, "variables": {"omega_max": 3.0}}], wait=True)
    assert [(j.runs, j.status) for j in batch.ordered_jobs] == [
        (5, "DONE"), (6, "DONE"), (7, "DONE")]
    assert sdk.get_batch_status(batch.id) is not BatchStatus.DONE  # still open
    batch.retry(batch.ordered_jobs[1], wait=True)
    assert [j.runs for j in batch.ordered_jobs] == [5, 6, 7, 6]
    assert batch.ordered_jobs[3].variables == {"omega_max": 2.0}
    batch.close(wait=True)
    wait_for(lambda: sdk.get_batch_status(batch.id) is BatchStatus.DONE, what="batch DONE")
    batch.refresh()
    assert batch.status == "DONE" and not batch.open and batch.complete
    with pytest.raises(JobCreationError):
        batch.add_jobs([{"runs": 1, "variables": {"omega_max": 1.0}}])


def test_rebatch_with_each_filter(sdk: SDK, serialized: str) -> None:
    batch = sdk.create_batch(serialized, [{"runs": 10, "variables": {"omega_max": 1.0}}],
                             open=True)
    batch.add_jobs([{"runs": 20, "variables": {"omega_max": 2.0}}])
    batch.add_jobs([{"runs": 30, "variables": {"omega_max": 3.0}}])
    batch.close(wait=True)
    jobs = batch.ordered_jobs
    assert [j.status for j in jobs] == ["DONE"] * 3

    def rebatched(filters: RebatchFilters | None) -> list[tuple[int, str | None]]:
        new = sdk.rebatch(batch.id, filters)
        assert new.parent_id == batch.id and new.id != batch.id
        return [(j.runs, j.parent_id) for j in new.ordered_jobs]

    a, b, c = jobs
    assert rebatched(None) == [(10, a.id), (20, b.id), (30, c.id)]
    assert rebatched(RebatchFilters(id=[a.id, c.id])) == [(10, a.id), (30, c.id)]
    assert rebatched(RebatchFilters(status=JobStatus.DONE)) == [
        (10, a.id), (20, b.id), (30, c.id)]
    assert rebatched(RebatchFilters(status=JobStatus.ERROR)) == []  # none: empty, DONE
    assert rebatched(RebatchFilters(min_runs=20)) == [(20, b.id), (30, c.id)]
    assert rebatched(RebatchFilters(max_runs=20)) == [(10, a.id), (20, b.id)]
    assert rebatched(RebatchFilters(start_date=_when(b.created_at))) == [
        (20, b.id), (30, c.id)]
    assert rebatched(RebatchFilters(end_date=_when(b.created_at))) == [
        (10, a.id), (20, b.id)]
    new = sdk.rebatch(batch.id, RebatchFilters(min_runs=30))
    done = sdk.get_batch(new.id)
    wait_for(lambda: sdk.get_batch_status(new.id) is BatchStatus.DONE, what="rebatch runs")
    done.refresh()
    assert [(j.runs, j.variables, j.status) for j in done.ordered_jobs] == [
        (30, {"omega_max": 3.0}, "DONE")]


def test_cancel_a_batch_and_many_batches(sdk: SDK, serialized: str) -> None:
    first = sdk.create_batch(serialized, [{"runs": 5, "variables": {"omega_max": 1.0}}],
                             open=True)
    first.cancel()
    assert first.status == "CANCELED"
    assert sdk.get_batch_status(first.id) is BatchStatus.CANCELED
    second = sdk.create_batch(serialized, [], open=True)
    third = sdk.create_batch(serialized, [], open=True)
    missing = "6f1b8bde-4f0c-4d5c-8d7e-2d6c7f2a9b10"
    response = sdk.cancel_batches([second.id, third.id, missing])
    assert {b.id for b in response.batches} == {second.id, third.id}
    assert {b.status for b in response.batches} == {"CANCELED"}
    assert [str(k) for k in response.errors] == [missing]


def test_cancel_jobs_by_filter_and_a_running_job(sdk: SDK) -> None:
    slow = sequence(atoms=12, duration=6000).to_abstract_repr()
    batch = sdk.create_batch(slow, [{"runs": r, "variables": {"omega_max": 6.0}}
                                    for r in range(11, 17)], open=True)
    # The last two by their runs, through the batch's cancel-jobs filters (jobs run one at
    # a time, in order: these are still waiting).
    response = sdk.cancel_jobs(batch.id, CancelJobFilters(min_runs=15))
    assert sorted(j.runs for j in response.jobs) == [15, 16]
    assert {j.status for j in response.jobs} == {"CANCELED"}
    assert sdk.get_job_status(response.jobs[0].id) is JobStatus.CANCELED
    # A running job, cancelled while it runs (should it end before the cancel reaches it,
    # the next one is tried).
    cancelled = None
    for _ in range(5):
        running = wait_for(
            lambda: sdk.get_jobs(JobFilters(batch_id=batch.id, status=JobStatus.RUNNING)).results,
            what="a running job")
        try:
            job = sdk.cancel_job(running[0].id)
        except JobCancellingError:
            continue
        if job.status == "CANCELED":
            cancelled = sdk.get_job(job.id)
            break
    assert cancelled is not None and cancelled.status == "CANCELED"
    assert cancelled.start_timestamp is not None  # it had started
    batch.close()
    wait_for(lambda: sdk.get_batch_status(batch.id) in (BatchStatus.DONE, BatchStatus.ERROR),
             what="the batch ends")
    batch.refresh()
    by_runs = {j.runs: j.status for j in batch.ordered_jobs}
    assert [by_runs[r] for r in (15, 16)] == ["CANCELED"] * 2
    assert by_runs[cancelled.runs] == "CANCELED"
    assert set(by_runs.values()) <= {"DONE", "CANCELED"}


def test_cancel_jobs_by_filter_reports_what_it_did_not_cancel_and_bad_filters(
        pasqal: Gateway, sdk: SDK, bob_sdk: SDK, serialized: str) -> None:
    """Jobs named by id that stay (ended, elsewhere, not matching) come back in ``errors``
    with the reason; filters the service cannot take are 400s in the SDK's error shape, and
    nothing is cancelled by them; another user's batch is missing."""
    import requests

    elsewhere = sdk.create_batch(serialized, [{"runs": 3, "variables": {"omega_max": 1.0}}],
                                 wait=True).ordered_jobs[0]
    slow = sequence(atoms=12, duration=6000).to_abstract_repr()
    batch = sdk.create_batch(slow, [{"runs": r, "variables": {"omega_max": 6.0}}
                                    for r in (11, 12, 13)], open=True)
    _, j12, j13 = batch.ordered_jobs
    try:
        response = sdk.cancel_jobs(batch.id, CancelJobFilters(
            id=[j12.id, j13.id, elsewhere.id], max_runs=12))
        assert [(j.id, j.status) for j in response.jobs] == [(j12.id, "CANCELED")]
        assert {str(k): v for k, v in response.errors.items()} == {
            j13.id: f"job {j13.id} does not match the other filters",
            elsewhere.id: f"no job {elsewhere.id} in batch {batch.id}"}
        again = sdk.cancel_jobs(batch.id, CancelJobFilters(id=j12.id))
        assert again.jobs == [] and {str(k): v for k, v in again.errors.items()} == {
            j12.id: f"job {j12.id} is CANCELED: it has already ended"}
        for filters in (CancelJobFilters(min_runs=2**70), CancelJobFilters(max_runs=-2**70)):
            with pytest.raises(JobCancellingError, match=r"failed: 400: query parameter"):
                sdk.cancel_jobs(batch.id, filters)
        url = sdk._client._get_url("cancel_jobs", batch_id=batch.id)
        headers = {"Authorization": f"Bearer {pasqal.alice_token}"}
        for query in ("status=FOO", "start_date=yesterday", "end_date=1e999", "min_runs=abc",
                      "min_runs=99999999999999999999", "errors=maybe"):
            answer = requests.patch(f"{url}?{query}", headers=headers, timeout=30)
            body = answer.json()
            assert answer.status_code == 400 and body["code"] == 400, (query, body)
            assert body["status"] == "fail" and body["data"]["description"] == body["message"]
        with pytest.raises(JobCancellingError, match="404"):
            bob_sdk.cancel_jobs(batch.id, CancelJobFilters(min_runs=1))
        assert sdk.get_job(j13.id).status in ("PENDING", "RUNNING")  # none of that cancelled it
    finally:
        batch.cancel()


def test_status_polls_answer_from_the_services_counts(
        pasqal: Gateway, sdk: SDK, serialized: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the SDK polls while it waits (a batch's status and its jobs' counts per status,
    a job's status) reads no job of the batch but the one asked for: however many jobs a
    batch has, a poll costs the same. The counts are right as jobs end and are cancelled."""
    batch = sdk.create_batch(serialized, [{"runs": 1, "variables": {"omega_max": 1.0}}
                                          for _ in range(20)], open=True)
    first, second = batch.ordered_jobs[:2]
    sdk.cancel_jobs(batch.id, CancelJobFilters(id=[second.id]))
    batch.close(wait=True)
    store = pasqal.gateway.server.service.quantum.store
    read: list[str] = []
    job_row = store._job

    def counting(row: Any) -> Any:
        job = job_row(row)
        if job.batch_id == batch.id:
            read.append(job.id)
        return job

    monkeypatch.setattr(store, "_job", counting)
    polled = sdk._client.get_batch_status(batch.id)
    assert polled == {"id": batch.id, "status": "DONE",
                      "jobs_count_per_status": {"DONE": 19, "CANCELED": 1}}
    assert sdk.get_batch_status(batch.id) is BatchStatus.DONE
    assert read == []
    assert sdk.get_job_status(first.id) is JobStatus.DONE
    assert read == [first.id]  # the job asked for, once
    monkeypatch.undo()
    batch.refresh()  # a batch's full read has them all
    assert sorted(j.status for j in batch.ordered_jobs) == ["CANCELED"] + ["DONE"] * 19


def test_the_native_client_sees_and_waits_on_the_same_batch(pasqal: Gateway,
                                                            serialized: str) -> None:
    """One service behind both doors: a batch the SDK made is the native client's too, and
    the native client's wait (pushed) ends when the SDK closes it."""
    from concurrent.futures import ThreadPoolExecutor

    from qsrv.gateway import GatewayClient

    sdk = pasqal.sdk()
    batch = sdk.create_batch(serialized, [{"runs": 12, "variables": {"omega_max": 2.0}}],
                             open=True)
    native = GatewayClient(pasqal.url, pasqal.alice_token)
    same = native.get_batch(batch.id)
    assert same.open and [j.id for j in same.ordered_jobs] == [
        j.id for j in batch.ordered_jobs]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(same.wait, 90)
        batch.close()
        done = waiting.result(120)
    assert done.status == "DONE" and not done.open
    batch.refresh()
    assert done.ordered_jobs[0].result == batch.ordered_jobs[0].result
    assert sum(batch.ordered_jobs[0].result.values()) == 12
