"""A distributed primitive's job awaited under asyncio and trio, and blocking inside a loop."""

from __future__ import annotations

import anyio
import pytest
from qiskit import QuantumCircuit
from qiskit.providers import JobStatus

from qsrv.quantum import Sampler

pytestmark = [pytest.mark.usefixtures("local_cluster"), pytest.mark.anyio]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


async def test_await_job_and_result_async() -> None:
    sampler = Sampler(default_shots=200, seed=7)
    job = sampler.run([bell()])
    result = await job
    counts = result[0].data.meas.get_counts()
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 200
    again = await sampler.run([bell()]).result_async()
    assert again[0].data.meas.get_counts() == counts  # same seed, same samples
    assert job.status() is JobStatus.DONE


async def test_blocking_result_inside_a_running_loop() -> None:
    job = Sampler(default_shots=50, seed=1).run([bell()])
    with anyio.fail_after(120):
        result = job.result()  # blocks this loop's thread, as any blocking call would
    assert sum(result[0].data.meas.get_counts().values()) == 50
    assert job.done()
