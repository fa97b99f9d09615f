"""scaleway-qaas-client (unmodified) for what Perceval and qiskit-scaleway do not touch: platform
filters, models, job listing per session, cancel, delete, listings by project, CUDA-Q's
payload (OpenQASM 2 through qio), and the errors bad input gets. Needs Python >= 3.12."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests._support.waiting import wait_for
from tests.scaleway.conftest import AER, PERCEVAL, Door, client_module

client_module("scaleway_qaas_client")
qio_core = client_module("qio.core")

from qiskit import QuantumCircuit  # noqa: E402
from scaleway_qaas_client.v1alpha1 import QaaSClient  # noqa: E402

QASM2_BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""


def _client(door: Door, project: str, token: str | None = None) -> QaaSClient:
    return QaaSClient(project_id=project, secret_key=token or door.token, url=door.url)


def _qasm2_model(qasm: str = QASM2_BELL) -> str:
    """A computation model as CUDA-Q's scaleway target makes one: one OpenQASM 2 program,
    zlib+base64, no backend options."""
    program = qio_core.QuantumProgram(
        compression_format=qio_core.QuantumProgramCompressionFormat.ZLIB_BASE64_V1,
        serialization_format=qio_core.QuantumProgramSerializationFormat.QASM_V2,
        serialization=__import__("qio.utils.compression", fromlist=["_"]).str_to_zlib(qasm))
    return str(qio_core.QuantumComputationModel(programs=[program]).to_json_str())


def _qiskit_model(qc: QuantumCircuit) -> str:
    program = qio_core.QuantumProgram.from_qiskit_circuit(qc)
    return str(qio_core.QuantumComputationModel(programs=[program]).to_json_str())


def _shots(n: int) -> str:
    return str(qio_core.QuantumComputationParameters(shots=n).to_json_str())


def _wait_job(client: QaaSClient, job_id: str) -> Any:
    return wait_for(lambda: (job := client.get_job(job_id)).status in (
        "completed", "error", "cancelled") and job, timeout=120, what=f"job {job_id}")


def test_platform_filters(door: Door, project: str) -> None:
    client = _client(door, project)
    every = client.list_platforms()
    names = {p.name for p in every}
    assert {AER, PERCEVAL} <= names
    [aer] = client.list_platforms(name=AER)
    assert aer.backend_name == "aer"
    assert aer.type_.value == "simulator"
    assert aer.technology.value == "general_purpose"
    assert aer.max_shot_count > 0
    assert client.get_platform(aer.id).name == AER
    assert {p.name for p in client.list_platforms(provider_name="quandela")} == {
        p.name for p in every if p.provider_name == "quandela"} >= {PERCEVAL}
    assert all(p.backend_name == "aer" for p in client.list_platforms(backend_name="aer"))
    photonic = client.list_platforms(platform_technology="PHOTONIC")
    assert {p.name for p in photonic} >= {PERCEVAL}
    assert AER not in {p.name for p in photonic}
    assert client.list_platforms(platform_type="QPU") == []
    assert client.list_platforms(name="no.such.platform") == []
    with pytest.raises(Exception, match="error 404"):
        client.get_platform("no-such-id")


def test_models_are_kept_and_listed_by_project(door: Door, project: str) -> None:
    client = _client(door, project)
    model = client.create_model(_qasm2_model())
    assert model.project_id == project
    assert client.get_model(model.id).id == model.id
    assert [m.id for m in client.list_models()] == [model.id]
    other = _client(door, project, token=door.other_token)
    with pytest.raises(Exception, match="error 404"):
        other.get_model(model.id)
    with pytest.raises(Exception, match=r"error 400.*invalid_arguments"):
        client.create_model("{not json")
    with pytest.raises(Exception, match="error 400"):
        client.create_model(json.dumps({"programs": []}))


def test_cudaq_payload_runs_and_jobs_are_listed_per_session(door: Door, project: str) -> None:
    client = _client(door, project)
    [aer] = client.list_platforms(name=AER)
    session = client.create_session(aer.id, max_duration="10m", max_idle_duration="5m")
    assert session.status.value in ("starting", "running")
    model = client.create_model(_qasm2_model())
    job = client.create_job(session.id, model_id=model.id, parameters=_shots(500),
                            name="bell-500")
    assert job.session_id == session.id
    assert job.model_id == model.id
    assert job.name == "bell-500"
    assert json.loads(job.parameters)["shots"] == 500
    done = _wait_job(client, job.id)
    assert done.status.value == "completed"
    assert done.started_at is not None
    [result] = client.list_job_results(job.id)
    counts = qio_core.QuantumProgramResult.from_json_str(result.result).to_qiskit_result(
    ).get_counts()
    assert sum(counts.values()) == 500
    assert set(counts) <= {"00", "11"}
    # The older way: the model inline, as the job's circuit.
    second = client.create_job(session.id, payload=_qasm2_model(), parameters=_shots(10))
    assert _wait_job(client, second.id).status.value == "completed"
    [inline] = client.list_job_results(second.id)
    assert sum(qio_core.QuantumProgramResult.from_json_str(inline.result).to_qiskit_result(
    ).get_counts().values()) == 10
    listed = client.list_jobs(session.id)
    assert {j.id for j in listed} == {job.id, second.id}
    assert [s.id for s in client.list_sessions(platform_id=aer.id)] == [session.id]
    client.terminate_session(session.id)
    ended = client.get_session(session.id)
    assert ended.status.value == "stopped"
    assert ended.terminated_at is not None
    with pytest.raises(Exception, match=r"error 409.*precondition_failed"):
        client.create_job(session.id, model_id=model.id, parameters=_shots(10))


def test_cancel_and_delete(door: Door, project: str) -> None:
    client = _client(door, project)
    [aer] = client.list_platforms(name=AER)
    session = client.create_session(aer.id)
    # Twenty qubits, a few hundred gates: each job keeps the session busy a while.
    wide = QuantumCircuit(20, 1)
    for layer in range(10):
        for q in range(20):
            wide.rx(0.1 * q + layer, q)
        for q in range(19):
            wide.cx(q, q + 1)
    wide.measure(0, 0)
    model = client.create_model(_qiskit_model(wide))
    jobs = [client.create_job(session.id, model_id=model.id, parameters=_shots(1000))
            for _ in range(4)]
    cancelled = client.cancel_job(jobs[-1].id)
    # Jobs of a session run in order: the last of four is still waiting when cancelled.
    assert cancelled.status.value == "cancelled"
    assert _wait_job(client, jobs[-1].id).status.value == "cancelled"
    assert client.list_job_results(jobs[-1].id) == []
    assert _wait_job(client, jobs[0].id).status.value == "completed"
    client.delete_session(session.id)
    with pytest.raises(Exception, match="error 404"):
        client.get_session(session.id)


def test_bad_input_gets_scaleway_errors_and_harms_nothing(door: Door, project: str) -> None:
    client = _client(door, project)
    with pytest.raises(Exception, match=r"error 404.*not_found"):
        client.create_session("no-such-platform")
    [aer] = client.list_platforms(name=AER)
    session = client.create_session(aer.id)
    model = client.create_model(_qasm2_model())
    with pytest.raises(Exception, match=r"error 400.*shots is over.*maximum.*invalid_arguments"):
        client.create_job(session.id, model_id=model.id,
                          parameters=_shots(aer.max_shot_count + 1))
    with pytest.raises(Exception, match=r"error 400.*invalid_arguments"):
        client.create_job(session.id, model_id=model.id, parameters="{not json")
    with pytest.raises(Exception, match=r"error 400.*invalid_arguments"):
        client.create_job(session.id, payload="definitely not a model")
    with pytest.raises(Exception, match="error 400"):
        client.create_session(aer.id, max_duration="10 fortnights")
    with pytest.raises(Exception, match=r"error 401.*denied_authentication"):
        _client(door, project, token="wrong").list_platforms()
    response = requests.post(f"{door.api}/jobs", data=b"\xff\xfe{",
                             headers={"X-Auth-Token": door.token,
                                      "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["type"] == "invalid_arguments"
    # The session still runs a good job.
    job = client.create_job(session.id, model_id=model.id, parameters=_shots(10))
    assert _wait_job(client, job.id).status.value == "completed"
    client.terminate_session(session.id)


def test_another_users_session_is_not_found(door: Door, project: str) -> None:
    client = _client(door, project)
    [aer] = client.list_platforms(name=AER)
    session = client.create_session(aer.id, deduplication_id="ours")
    other = _client(door, project, token=door.other_token)
    with pytest.raises(Exception, match="error 404"):
        other.get_session(session.id)
    assert other.list_sessions() == []
    with pytest.raises(Exception, match="error 404"):
        other.list_jobs(session.id)
    theirs = other.create_session(aer.id, deduplication_id="ours")  # a deduplication id is
    assert theirs.id != session.id                                   # one user's own
    other.terminate_session(theirs.id)
    client.terminate_session(session.id)


def test_an_idle_session_stops_with_its_reason(door: Door, project: str) -> None:
    client = _client(door, project)
    [aer] = client.list_platforms(name=AER)
    session = client.create_session(aer.id, max_duration="10m", max_idle_duration="1s")
    stopped = wait_for(lambda: (s := client.get_session(session.id)).status.value == "stopped"
                       and s, timeout=60, what="the idle session to stop")
    assert stopped.progress_message.startswith("idle")
    assert stopped.terminated_at is not None
    model = client.create_model(_qasm2_model())
    with pytest.raises(Exception, match=r"error 409.*precondition_failed"):
        client.create_job(session.id, model_id=model.id, parameters=_shots(10))


def test_listings_are_paged(door: Door, project: str) -> None:
    client = _client(door, project)
    [aer] = client.list_platforms(name=AER)
    session = client.create_session(aer.id)
    model = client.create_model(_qasm2_model())
    made = [client.create_job(session.id, model_id=model.id, parameters=_shots(10)).id
            for _ in range(3)]
    headers = {"X-Auth-Token": door.token}

    def page(**params: object) -> dict[str, Any]:
        response = requests.get(f"{door.api}/jobs", headers=headers, timeout=30,
                                params={"session_id": session.id, **params})
        return response.json()  # type: ignore[no-any-return]

    first, second = page(page=1, page_size=2), page(page=2, page_size=2)
    assert first["total_count"] == second["total_count"] == 3
    assert len(first["jobs"]) == 2 and len(second["jobs"]) == 1
    assert {j["id"] for j in first["jobs"] + second["jobs"]} == set(made)
    assert [j["id"] for j in first["jobs"]] == made[::-1][:2]  # newest first
    for bad in ({"page_size": 101}, {"page": 0}, {"page_size": "many"}):
        response = requests.get(f"{door.api}/jobs", headers=headers, params=bad, timeout=30)
        assert response.status_code == 400
        assert response.json()["type"] == "invalid_arguments"
    client.terminate_session(session.id)
