"""The gateway client's async forms under asyncio and trio alike (its HTTP runs on aiohttp,
which needs asyncio: under trio it runs on qsrv's private loop). Cancelling the awaiting task
cancels the wait, never the job."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from qsrv.errors import JobFailedError
from qsrv.gateway import Client, JobStatus, Program


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _waiting_program(make_program: Callable[..., Program], release: Path) -> Program:
    return make_program("waits", f"""
import pathlib, time
from qsrv.gateway import get_arguments, save_result
release = pathlib.Path({str(release)!r})
deadline = time.monotonic() + 60
while not release.exists() and time.monotonic() < deadline:
    time.sleep(0.02)
save_result(get_arguments()["v"] + 1)
""")


@pytest.mark.anyio
async def test_async_forms(alice: Client, make_program: Callable[..., Program],
                           tmp_path: Path) -> None:
    release = tmp_path / "release"
    info = await alice.upload_async(_waiting_program(make_program, release))
    assert info.version == 1
    job = await alice.run_async("waits", {"v": 41})
    assert await job.status_async() in (JobStatus.QUEUED, JobStatus.RUNNING)
    release.touch()
    assert await job.result_async(timeout=60) == 42
    assert (await alice.jobs_async()).total == 1
    assert (await alice.job_async(job.job_id)).job_id == job.job_id
    assert [p.title for p in await alice.programs_async()] == ["waits"]
    assert "Traceback" not in await job.logs_async()
    assert await job.stop_async() is JobStatus.SUCCEEDED


@pytest.mark.anyio
async def test_cancelling_a_wait_leaves_the_job_running(
        alice: Client, make_program: Callable[..., Program], tmp_path: Path) -> None:
    release = tmp_path / "release"
    job = await alice.run_async(_waiting_program(make_program, release), {"v": 1})
    with anyio.move_on_after(0.5) as scope:
        await job.result_async()
    assert scope.cancelled_caught
    assert not (await job.status_async()).terminal
    release.touch()
    assert await job.result_async(timeout=60) == 2


def test_sync_errors_carry_no_spurious_context(alice: Client,
                                               make_program: Callable[..., Program]) -> None:
    """The sync form raises the job's own error, not one chained to an event-loop probe."""
    job = alice.run(make_program("fails", "raise SystemExit(3)"))
    with pytest.raises(JobFailedError) as info:
        job.result(timeout=60)
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert not any(isinstance(e, RuntimeError) for e in chain), chain
