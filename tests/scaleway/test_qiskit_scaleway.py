"""qiskit-scaleway (unmodified) against the door: backends, run with and without a session,
sessions shared by deduplication id, stop_session, the Sampler and Estimator primitives,
counts equal to Aer's with the same seed (with a noise model too), and the errors it raises
(a stopped session, shots above the maximum). Needs Python >= 3.12 (see conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.scaleway.conftest import AER, Door, client_module, get, platform, sessions

qiskit_scaleway = client_module("qiskit_scaleway")
primitives = client_module("qiskit_scaleway.primitives")

from qiskit import QuantumCircuit  # noqa: E402
from qiskit.primitives import BackendSamplerV2  # noqa: E402
from qiskit.quantum_info import SparsePauliOp  # noqa: E402
from qiskit_aer import AerSimulator  # noqa: E402
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error  # noqa: E402


def _provider(door: Door, project: str) -> Any:
    return qiskit_scaleway.ScalewayProvider(project_id=project, secret_key=door.token,
                                            url=door.url)


def _bell(measure: bool = True) -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    if measure:
        qc.measure_all()
    return qc


def _session(door: Door, session_id: str) -> dict[str, Any]:
    return get(door, f"/sessions/{session_id}")


@contextmanager
def _in_a_session(door: Door, project: str) -> Iterator[tuple[Any, str]]:
    """The Aer backend and a session of its own, stopped at the end."""
    backend = _provider(door, project).get_backend(AER)
    session_id = backend.start_session()
    try:
        yield backend, session_id
    finally:
        backend.stop_session(session_id)


def test_backends_list_the_aer_platforms_only(door: Door, project: str) -> None:
    provider = _provider(door, project)
    backends = provider.backends()
    names = {b.name for b in backends}
    assert AER in names
    assert all(type(b).__name__ == "AerBackend" for b in backends)  # no Perceval platform
    backend = provider.get_backend(AER)
    assert backend.num_qubits >= 2
    assert backend.max_circuits >= 1
    assert backend.availability in ("available", "scarce")
    assert backend.version
    assert provider.backends(operational=True, min_num_qubits=2)
    with pytest.raises(Exception, match="No backend matches"):
        provider.get_backend("no.such.platform")


def test_run_in_an_explicit_session_shared_by_deduplication_id(door: Door, project: str) -> None:
    backend = _provider(door, project).get_backend(AER)
    session_id = backend.start_session(deduplication_id="my-workshop", max_duration="30m",
                                       max_idle_duration="5min")
    again = backend.start_session(deduplication_id="my-workshop", max_duration="30m",
                                  max_idle_duration="5min")
    assert again == session_id
    seen = _session(door, session_id)
    assert seen["max_duration"] == "1800s"
    assert seen["max_idle_duration"] == "300s"
    assert seen["deduplication_id"] == "my-workshop"
    result = backend.run(_bell(), shots=1000, session_id=session_id).result()
    counts = result.get_counts()
    assert sum(counts.values()) == 1000
    assert set(counts) <= {"00", "11"}
    backend.stop_session(session_id)
    assert _session(door, session_id)["status"] == "stopped"
    with pytest.raises(Exception, match="precondition_failed"):
        backend.run(_bell(), shots=10, session_id=session_id)


def test_run_without_a_session_opens_one(door: Door, project: str) -> None:
    backend = _provider(door, project).get_backend(AER)
    result = backend.run(_bell(), shots=200).result()
    assert sum(result.get_counts().values()) == 200
    [auto] = sessions(door, project)
    assert auto["name"].startswith("auto-")
    backend.delete_session(auto["id"])
    gone = requests.get(f"{door.api}/sessions/{auto['id']}",
                        headers={"X-Auth-Token": door.token}, timeout=30)
    assert gone.status_code == 404


def test_shots_above_the_platforms_maximum_are_refused_and_harm_nothing(
        door: Door, project: str) -> None:
    most = platform(door, AER)["max_shot_count"]
    with _in_a_session(door, project) as (backend, session_id):
        with pytest.raises(Exception, match=r"error 400.*over.*maximum.*invalid_arguments"):
            backend.run(_bell(), shots=most + 1, session_id=session_id)
        result = backend.run(_bell(), shots=10, session_id=session_id).result()
        assert sum(result.get_counts().values()) == 10


def test_several_circuits_in_one_job_each_get_their_result(door: Door, project: str) -> None:
    with _in_a_session(door, project) as (backend, session_id):
        ones = QuantumCircuit(2)
        ones.x([0, 1])
        ones.measure_all()
        results = backend.run([_bell(), ones], shots=100, session_id=session_id).result()
        assert len(results) == 2
        assert set(results[0].get_counts()) <= {"00", "11"}
        assert results[1].get_counts() == {"11": 100}


def test_counts_equal_aers_with_the_same_seed(door: Door, project: str) -> None:
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.rx(0.7, 1)
    qc.cx(0, 2)
    qc.ry(1.1, 2)
    qc.measure_all()
    with _in_a_session(door, project) as (backend, session_id):
        ours = backend.run(qc, shots=2000, seed_simulator=1234,
                           session_id=session_id).result().get_counts()
    direct = AerSimulator(method="statevector").run(qc, shots=2000, seed_simulator=1234)
    assert ours == direct.result().get_counts()


def test_a_noise_model_runs_as_aer_runs_it_with_the_same_seed(door: Door, project: str) -> None:
    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.2, 2), ["cx"])
    noise.add_all_qubit_readout_error(ReadoutError([[0.9, 0.1], [0.2, 0.8]]))
    with _in_a_session(door, project) as (backend, session_id):
        ours = backend.run(_bell(), shots=2000, seed_simulator=99, noise_model=noise,
                           session_id=session_id).result().get_counts()
    direct = AerSimulator(method="statevector").run(_bell(), shots=2000, seed_simulator=99,
                                                    noise_model=noise).result().get_counts()
    assert ours == direct
    assert set(ours) == {"00", "01", "10", "11"}  # the noise shows (a Bell pair alone: 00, 11)


def test_sampler_primitive_runs_in_the_session(door: Door, project: str) -> None:
    with _in_a_session(door, project) as (backend, session_id):
        sampler = primitives.Sampler(backend, session_id=session_id)
        [pub] = sampler.run([_bell()], shots=300).result()
        counts = pub.data.meas.get_counts()
        assert sum(counts.values()) == 300
        assert set(counts) == {"00", "11"}  # each shot's outcome came back (2^-299 to fail)
        seeded = primitives.Sampler(backend, session_id=session_id,
                                    options={"seed_simulator": 21})
        [ours] = seeded.run([_bell()], shots=50).result()
    aer = BackendSamplerV2(backend=AerSimulator(method="statevector"),
                           options={"seed_simulator": 21})
    [direct] = aer.run([_bell()], shots=50).result()
    assert ours.data.meas.get_bitstrings() == direct.data.meas.get_bitstrings()  # shot by shot


def test_estimator_primitive_runs_in_the_session(door: Door, project: str) -> None:
    with _in_a_session(door, project) as (backend, session_id):
        estimator = primitives.Estimator(backend, session_id=session_id)
        [pub] = estimator.run([(_bell(measure=False), SparsePauliOp("ZZ"))]).result()
        assert float(pub.data.evs) == pytest.approx(1.0)
        [pub] = estimator.run([(_bell(measure=False), SparsePauliOp("XI"))]).result()
        assert abs(float(pub.data.evs)) < 0.2
