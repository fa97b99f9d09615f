"""The Python client's quantum flows end to end, against a real cluster and gateway:
sessions (get-or-create, ``with`` that terminates or only detaches), jobs and their results,
closed and open batches (add, retry, close, cancel, rebatch), listings with filters and pages,
idempotent creates, the qiskit primitives on a session, the async forms, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

from qsrv.errors import ConflictError, InvalidRequestError, NotFoundError
from qsrv.gateway import (
    Batch,
    BatchFilters,
    GatewayClient,
    JobFilters,
    Pagination,
    QStatus,
    QuantumJob,
    Session,
    SessionStatus,
    StopReason,
)
from tests._support import wait_for
from tests.gateway.quantum_support import AER, BELL, QuantumEnv, quantum_env, slow_qasm


@pytest.fixture(scope="module")
def env() -> Iterator[QuantumEnv]:
    with quantum_env() as e:
        yield e


def rotation() -> QuantumCircuit:
    qc = QuantumCircuit(1, 1)
    qc.ry(Parameter("theta"), 0)
    qc.measure(0, 0)
    return qc


def test_platforms(env: QuantumEnv) -> None:
    platforms = {p.name: p for p in env.alice.platforms()}
    aer = platforms[AER]
    assert aer.engine == "aer" and aer.max_qubits > 0 and aer.max_shots > 0
    assert aer.availability in ("available", "busy") and aer.hardware.vcpus >= 1


def test_session_with_block_terminates_what_it_created(env: QuantumEnv) -> None:
    client = env.alice
    with client.session(AER, deduplication_id="shared", max_duration="30m",
                        max_idle_duration=600) as first:
        assert isinstance(first, Session) and first.created
        assert first.platform == AER and first.deduplication_id == "shared"
        assert first.max_duration_s == 1800 and first.max_idle_duration_s == 600
        with client.session(AER, deduplication_id="shared") as joined:
            assert joined.id == first.id and not joined.created
        assert joined.refresh().status in (SessionStatus.STARTING, SessionStatus.RUNNING)
        job = first.run(BELL, shots=100, seed=3)
        assert isinstance(job, QuantumJob) and job.session_id == first.id
        assert job.wait(120).status is QStatus.DONE
        assert sum(job.result.values()) == 100 and set(job.result) <= {"00", "11"}
        assert job.result_object().get_counts() == job.result  # qiskit's Result
        assert job.created_at and job.started_at and job.ended_at and job.errors == []
        second = first.run(BELL, shots=10)
        assert [j.id for j in first.jobs()] == [job.id, second.id]
        running = client.sessions(status="running")
        assert first.id in [s.id for s in running]
    ended = first.refresh()
    assert ended.status is SessionStatus.STOPPED and ended.reason is StopReason.TERMINATED
    assert ended.terminated_at is not None
    assert first.id not in [s.id for s in client.sessions(status="running")]
    assert first.id in [s.id for s in client.sessions(status=["stopped"])]


def test_terminate_while_a_job_runs_is_stopping_then_stopped(env: QuantumEnv) -> None:
    client = env.alice
    session = client.session(AER)
    job = session.run(slow_qasm(), shots=1)
    wait_for(lambda: job.refresh().status is QStatus.RUNNING, timeout=60)
    stopping = session.terminate()
    assert stopping.status is SessionStatus.STOPPING
    assert stopping.reason is StopReason.TERMINATED
    stopped = session.wait(120)
    assert stopped.status is SessionStatus.STOPPED and stopped.terminated_at is not None
    assert job.refresh().status is QStatus.CANCELED and "terminated" in job.errors[-1]
    # Leaving a ``with`` block that created the session waits until it is stopped.
    with client.session(AER) as other:
        running = other.run(slow_qasm(), shots=1)
        wait_for(lambda: running.refresh().status is QStatus.RUNNING, timeout=60)
    assert other.status is SessionStatus.STOPPED and other.reason is StopReason.TERMINATED
    assert running.refresh().status is QStatus.CANCELED


def test_bad_session_options_are_clear_errors(env: QuantumEnv) -> None:
    with pytest.raises(InvalidRequestError, match="unit"):
        env.alice.session(AER, max_duration="3 weeks")
    with pytest.raises(InvalidRequestError):
        env.alice.session(AER, max_duration="10m", max_idle_duration="1h")
    with pytest.raises(NotFoundError):
        env.alice.session("no.such.platform")


def test_closed_batch_listing_and_rebatch(env: QuantumEnv) -> None:
    client = env.alice
    jobs = [{"shots": 10 * (i + 1), "variables": {"theta": theta}}
            for i, theta in enumerate((0.0, 3.14159, 0.0))]
    batch = client.create_batch(rotation(), jobs, platform=AER, wait=True, tags=["scan"])
    assert isinstance(batch, Batch) and batch.status is QStatus.DONE and not batch.open
    assert [j.result for j in batch.ordered_jobs] == [{"0": 10}, {"1": 20}, {"0": 30}]
    assert [j.variables for j in batch.ordered_jobs] == [j["variables"] for j in jobs]
    assert set(batch.jobs) == {j.id for j in batch.ordered_jobs}

    page = client.get_jobs(JobFilters(batch_id=batch.id), Pagination(limit=2))
    assert page.total == 3 and [j.shots for j in page.results] == [30, 20]  # newest first
    rest = client.get_jobs(JobFilters(batch_id=batch.id),
                           Pagination(offset=2, limit=2, snapshot=page.snapshot))
    assert [j.shots for j in rest.results] == [10]
    assert client.get_jobs(JobFilters(batch_id=batch.id, min_shots=15, max_shots=25)).total == 1
    assert client.get_jobs(JobFilters(batch_id=batch.id, status="ERROR")).total == 0
    batches = client.get_batches(BatchFilters(id=batch.id, status=QStatus.DONE))
    assert batches.total == 1 and batches.results[0].id == batch.id
    with pytest.raises(InvalidRequestError):
        client.get_jobs(pagination=Pagination(limit=101))

    again = client.rebatch(batch.id, JobFilters(min_shots=20))
    assert again.parent_id == batch.id and again.id != batch.id
    assert [j.shots for j in again.ordered_jobs] == [20, 30]
    assert again.wait(120).status is QStatus.DONE
    assert [j.result for j in again.ordered_jobs] == [{"1": 20}, {"0": 30}]
    assert len(client.rebatch(batch).ordered_jobs) == 3


def test_open_batch_variational_steps_retry_and_close(env: QuantumEnv) -> None:
    client = env.alice
    with client.session(AER) as session:
        batch = client.create_batch(rotation(), [{"shots": 50, "variables": {"theta": 0.0}}],
                                    session=session, open=True, wait=True)
        assert batch.open and batch.session_id == session.id
        theta = 0.0
        for _ in range(3):  # the next job's variables derived from the previous results
            ones = batch.ordered_jobs[-1].result.get("1", 0)
            theta += 1.0 - ones / 50
            batch.add_jobs([{"shots": 50, "variables": {"theta": theta}}], wait=True)
        assert len(batch.ordered_jobs) == 4
        assert all(j.status is QStatus.DONE for j in batch.ordered_jobs)
        assert batch.ordered_jobs[-1].variables == {"theta": theta}
        retried = batch.retry(batch.ordered_jobs[0], wait=True)
        assert retried.parent_id == batch.ordered_jobs[0].id and retried.status is QStatus.DONE
        assert batch.ordered_jobs[-1].id == retried.id
        assert batch.close(wait=True).status is QStatus.DONE and not batch.open
        with pytest.raises(ConflictError):
            batch.add_jobs([{"shots": 1, "variables": {"theta": 0.0}}])


def test_idempotent_create_and_cancels(env: QuantumEnv) -> None:
    client = env.alice
    first = client.create_batch(rotation(), [{"shots": 5, "variables": {"theta": 0.1}}],
                                platform=AER, open=True, idempotency_key="create-once")
    again = client.create_batch(rotation(), [{"shots": 5, "variables": {"theta": 0.1}}],
                                platform=AER, open=True, idempotency_key="create-once")
    assert again.id == first.id and len(again.ordered_jobs) == 1
    cancelled = first.cancel()
    assert cancelled.status is QStatus.CANCELED
    other = client.create_batch(rotation(), [{"shots": 5, "variables": {"theta": 0.1}}] * 2,
                                platform=AER, open=True)
    other.cancel_jobs(JobFilters(status=["PENDING", "RUNNING", "DONE"]))
    assert all(j.status.terminal for j in other.refresh().ordered_jobs)
    other.cancel()
    with pytest.raises(InvalidRequestError, match="theta"):
        client.create_batch(rotation(), [{"shots": 5, "variables": {}}], platform=AER)


def test_sampler_and_estimator_on_a_session(env: QuantumEnv) -> None:
    with env.alice.session(AER) as session:
        sampler = session.sampler(default_shots=64, max_shots_per_call=40)
        result = sampler.run([(rotation(), [[0.0], [3.14159]])]).result()
        assert result[0].data.c.get_counts(0) == {"0": 64}
        assert result[0].data.c.get_counts(1) == {"1": 64}
        bell = QuantumCircuit.from_qasm_str(BELL)
        counts = sampler.run([bell], shots=100).result()[0].data.c.get_counts()
        assert sum(counts.values()) == 100 and set(counts) <= {"00", "11"}

        circuit = QuantumCircuit(1)
        circuit.ry(Parameter("theta"), 0)
        estimator = session.estimator()
        out = estimator.run([(circuit, SparsePauliOp(["Z", "I"], [2.0, 0.5]),
                              [[0.0], [3.14159]])]).result()[0]
        assert out.data.evs.shape == (2,)
        assert out.data.evs[0] == pytest.approx(2.5) and out.data.evs[1] == pytest.approx(-1.5)


def test_async_forms(env: QuantumEnv) -> None:
    async def main() -> tuple[QStatus, dict[str, int] | None, int]:
        client = GatewayClient(env.url, env.alice_token)
        session = await client.session_async(AER, deduplication_id="async")
        job = await session.run_async(BELL, shots=20)
        await job.wait_async(120)
        counts = await job.result_async()
        batch = await client.create_batch_async(BELL, [{"shots": 5}], session=session)
        await batch.wait_async(120)
        page = await client.get_batches_async(BatchFilters(session_id=session.id))
        async with await client.session_async(AER, "async") as joined:  # only detaches
            assert joined.id == session.id and not joined.created
        assert (await joined.refresh_async()).status is SessionStatus.RUNNING
        await session.terminate_async()
        async with await client.session_async(AER, "async") as fresh:  # terminated at exit
            assert fresh.created and fresh.id != session.id
        assert (await fresh.wait_async(60)).status is SessionStatus.STOPPED
        return batch.status, counts, page.total

    status, counts, total = asyncio.run(main())
    assert status is QStatus.DONE and counts is not None and sum(counts.values()) == 20
    assert total == 1


def test_another_users_objects_are_missing(env: QuantumEnv) -> None:
    alice, bob = env.alice, env.bob
    with alice.session(AER) as session:
        batch = alice.create_batch(BELL, [{"shots": 5}], session=session, open=True)
        job = batch.ordered_jobs[0]
        for call in (lambda: bob.get_session(session.id), lambda: bob.get_batch(batch.id),
                     lambda: bob.get_quantum_job(job.id), lambda: bob.rebatch(batch.id),
                     lambda: bob.create_batch(BELL, [{"shots": 1}], session=session.id)):
            with pytest.raises(NotFoundError):
                call()
        assert session.id not in [s.id for s in bob.sessions()]
        assert bob.get_jobs(JobFilters(batch_id=batch.id)).total == 0
        assert bob.cancel_jobs(JobFilters(batch_id=batch.id)) == []
        assert batch.refresh().open
        batch.close(wait=True)


def test_perceval_and_pulser_programs_through_the_client(env: QuantumEnv) -> None:
    """Programs of each engine are converted on the client's side (``program_from``) and run
    on their platforms; the native result is the engine's own."""
    import warnings

    import perceval as pcvl
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    from qsrv.quantum.engines import perceval_program

    mzi = pcvl.Circuit(2) // pcvl.BS.H() // (0, pcvl.PS(pcvl.P("phi"))) // pcvl.BS.H()
    photonic = env.alice.create_batch(
        perceval_program(mzi, "|1,0>", max_samples=200),
        [{"shots": 200, "variables": {"phi": 0.0}}, {"shots": 200, "variables": {"phi": 3.14159}}],
        platform="perceval.slos.cpu", wait=True)
    assert photonic.status is QStatus.DONE, [j.errors for j in photonic.ordered_jobs]
    first, second = (j.result for j in photonic.ordered_jobs)
    assert first is not None and second is not None
    assert sum(first.values()) == 200 and len(first) == 1 and first != second  # interference
    native = photonic.ordered_jobs[0].result_object()  # Perceval's own, as its remote job's
    assert {str(state): n for state, n in native["results"].items()} == first

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        register = Register.from_coordinates([(6.0 * i, 0.0) for i in range(2)], prefix="q")
        seq = Sequence(register, AnalogDevice)
        seq.declare_channel("ryd", "rydberg_global")
        omega = seq.declare_variable("omega_max")
        seq.add(Pulse.ConstantPulse(400, omega, 0.0, 0.0), "ryd")
        seq.measure("ground-rydberg")
    atoms = env.alice.create_batch(seq, [{"shots": 50, "variables": {"omega_max": 2.0}}],
                                   platform="pulser.qutip.cpu", wait=True)
    assert atoms.status is QStatus.DONE, [j.errors for j in atoms.ordered_jobs]
    counts = atoms.ordered_jobs[0].result
    assert counts is not None and sum(counts.values()) == 50
    assert all(len(bits) == 2 for bits in counts)
