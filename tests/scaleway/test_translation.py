"""The door's translations on their own (no cluster): a Scaleway job's status from its quantum
jobs, times and durations, payloads read by qio and Perceval's shape, results written by qio."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest
from qio.core import (
    QuantumComputationModel,
    QuantumComputationParameters,
    QuantumProgram,
    QuantumProgramResult,
    QuantumProgramSerializationFormat,
)
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator

from qsrv.errors import InvalidRequestError
from qsrv.gateway._quantum import QJobRecord, QStatus
from qsrv.gateway._scaleway import _payloads, _shapes
from qsrv.quantum.engines import Program
from qsrv.quantum.engines import execute as run_engine


def _job(status: QStatus, n: int = 0) -> QJobRecord:
    return QJobRecord(id=f"j{n}", user_id=1, project=None, batch_id="b", session_id="s", seq=n,
                      status=status, shots=1, variables={}, program=Program("qiskit.qasm2", ""),
                      created_at=1.0, started_at=None, ended_at=None, errors=(),
                      parent_id=None, has_result=False)


@pytest.mark.parametrize("statuses", [
    combo for n in (1, 2, 3) for combo in itertools.product(list(QStatus), repeat=n)])
def test_a_jobs_status_follows_its_circuits(statuses: tuple[QStatus, ...]) -> None:
    status = _shapes.job_status([_job(s, i) for i, s in enumerate(statuses)])
    done = [s.terminal for s in statuses]
    if QStatus.RUNNING in statuses:
        assert status == "running"
    elif all(s == QStatus.DONE for s in statuses):
        assert status == "completed"
    elif not all(done):
        assert status == ("running" if QStatus.DONE in statuses else "waiting")
    elif {QStatus.ERROR, QStatus.TIMED_OUT} & set(statuses):
        assert status == "error"
    else:
        assert status == "cancelled"
    assert status in ("waiting", "running", "completed", "error", "cancelled")


def test_times_are_rfc3339_utc_and_durations_seconds() -> None:
    text = _shapes.rfc3339(1_700_000_000.25)
    assert text == "2023-11-14T22:13:20.250000Z"
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == datetime.fromtimestamp(
        1_700_000_000.25, UTC)
    assert _shapes.rfc3339(None) is None
    assert _shapes.duration(1800.0) == "1800s"
    assert _shapes.duration(2.5) == "2.5s"
    assert _shapes.duration(float("inf")) is None
    assert _shapes.platform_id("aer.statevector.cpu") == _shapes.platform_id(
        "aer.statevector.cpu") != _shapes.platform_id("aer.mps.cpu")


def _bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def test_a_qio_model_becomes_programs_and_options() -> None:
    model = QuantumComputationModel(programs=[
        QuantumProgram.from_qiskit_circuit(_bell()),
        QuantumProgram.from_qiskit_circuit(_bell(), QuantumProgramSerializationFormat.QASM_V2)])
    computation = _payloads.computation_from_model(model.to_json_str())
    assert [p.kind for p in computation.programs] == ["qiskit.qasm3", "qiskit.qasm2"]
    assert computation.programs[0].data.startswith("OPENQASM 3.0;")
    assert computation.options == {}
    params = _payloads.parameters_from(
        QuantumComputationParameters(shots=7, options={"memory": True}).to_json_str())
    assert (params.shots, params.options) == (7, {"memory": True})
    assert _payloads.parameters_from(None).shots is None


@pytest.mark.parametrize("payload", [
    "{not json", "[]", json.dumps({"programs": []}), 42,
    json.dumps({"programs": [{"compression_format": 1, "serialization_format": 5,
                              "serialization": "{}"}]}),
    json.dumps({"programs": [{"compression_format": 2, "serialization_format": 2,
                              "serialization": "not base64 zlib"}]}),
])
def test_a_bad_model_is_an_invalid_request(payload: object) -> None:
    with pytest.raises(InvalidRequestError):
        _payloads.computation_from_model(payload)


@pytest.mark.parametrize("raw", ["{", json.dumps({"shots": 0}),
                                 json.dumps({"options": {}})])
def test_bad_parameters_are_an_invalid_request(raw: str) -> None:
    with pytest.raises(InvalidRequestError):
        _payloads.parameters_from(raw)


@pytest.mark.parametrize("raw", ["{", json.dumps({"command": "samples"}),
                                 json.dumps({"command": "samples", "experiment": "x"})])
def test_a_bad_perceval_payload_is_an_invalid_request(raw: str) -> None:
    with pytest.raises(InvalidRequestError):
        _payloads.perceval_job(raw)


def test_a_qiskit_result_travels_as_qio_and_back() -> None:
    result = AerSimulator().run(_bell(), shots=50, seed_simulator=3, memory=True).result()
    text = _payloads.qio_result(json.dumps(result.to_dict(), default=str))
    back = QuantumProgramResult.from_json_str(text).to_qiskit_result()
    assert back.get_counts() == result.get_counts()
    assert back.get_memory() == result.get_memory()


def test_cudaqs_programs_get_their_outcomes_with_qubit_zero_first() -> None:
    from qio.utils.compression import zlib_to_dict

    body = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\nx q[0];\nx q[1];\n' \
           "measure q -> c;\n"
    assert _payloads.from_cudaq(Program(
        "qiskit.qasm2", "// Code generated by NVIDIA's nvq++ compiler\n" + body))
    assert not _payloads.from_cudaq(Program("qiskit.qasm2", body))
    qc = QuantumCircuit(3)
    qc.x([0, 1])
    qc.measure_all()
    native = json.dumps(AerSimulator().run(qc, shots=5, memory=True).result().to_dict(),
                        default=str)
    cudaq = QuantumProgramResult.from_json_str(_payloads.qio_result(native, cudaq_order=True))
    [experiment] = zlib_to_dict(cudaq.serialization)["results"]
    assert experiment["data"]["counts"] == {"110": 5}
    assert experiment["data"]["memory"] == ["110"] * 5
    qiskit = QuantumProgramResult.from_json_str(_payloads.qio_result(native))
    assert qiskit.to_qiskit_result().get_counts() == {"011": 5}


def test_a_models_noise_model_goes_to_the_aer_engine_and_a_bad_one_is_refused() -> None:
    from qio.core import QuantumNoiseModel
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.3, 2), ["cx"])
    carried = QuantumNoiseModel.from_qiskit_aer_noise_model(noise)
    model = QuantumComputationModel(programs=[QuantumProgram.from_qiskit_circuit(_bell())],
                                    noise_model=carried)
    computation = _payloads.computation_from_model(model.to_json_str())
    assert computation.noise_model is not None
    program = computation.programs[0]
    ours = run_engine(program, 500, {}, platform="aer.statevector.cpu", seed=5,
                      options={"noise_model": computation.noise_model})
    direct = AerSimulator(method="statevector").run(_bell(), shots=500, seed_simulator=5,
                                                    noise_model=noise).result()
    assert ours.counts == direct.get_counts()
    for bad in ({"serialization_format": 0}, {"serialization": "not zlib"}):
        broken = json.loads(model.to_json_str())
        broken["noise_model"].update(bad)
        with pytest.raises(InvalidRequestError, match="noise model"):
            _payloads.computation_from_model(json.dumps(broken))
