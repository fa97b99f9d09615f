"""The door's HTTP edges with plain requests: every body-reading route fed garbage answers a
4xx in Scaleway's error shape and logs nothing; tokens go in X-Auth-Token and nowhere else."""

from __future__ import annotations

import logging

import pytest
import requests

from tests.scaleway.conftest import AER, Door

_GARBAGE: list[tuple[str, dict[str, object]]] = [
    ("not json", {"data": b"{not json"}),
    ("bad utf-8", {"data": b"\xff\xfe{\"a\": 1}"}),
    ("json list", {"json": [1, 2]}),
    ("json string", {"json": "hello"}),
    ("deep json", {"data": b"[" * 100_000 + b"]" * 100_000}),
    ("wrong types", {"json": {"platform_id": 3, "session_id": ["x"], "payload": {"a": 1},
                              "circuit": "x", "tags": "x", "max_duration": True,
                              "parameters": 12}}),
    ("empty object", {"json": {}}),
    ("nulls", {"json": {"platform_id": None, "session_id": None, "payload": None}}),
]
_POSTS = ["/sessions", "/jobs", "/models"]


@pytest.mark.parametrize("path", _POSTS)
def test_garbage_bodies_get_4xx_in_scaleway_shape(door: Door, path: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    failures = []
    for name, kwargs in _GARBAGE:
        response = requests.post(door.api + path, headers={
            "X-Auth-Token": door.token, "Content-Type": "application/json"}, timeout=30,
            **kwargs)  # type: ignore[arg-type]
        body = response.json()
        if not 400 <= response.status_code < 500 or set(body) != {"message", "type"}:
            failures.append((name, response.status_code, body))
    assert not failures, failures
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_fields_of_the_wrong_kind_are_named(door: Door) -> None:
    headers = {"X-Auth-Token": door.token}
    response = requests.post(f"{door.api}/sessions", headers=headers, timeout=30,
                             json={"platform_id": AER, "max_duration": "3 weeks-ish"})
    assert response.status_code == 400
    assert "max_duration" in response.json()["message"]
    response = requests.post(f"{door.api}/sessions", headers=headers, timeout=30,
                             json={"platform_id": AER, "booking_demand": {"started_at": "x"}})
    assert response.status_code == 400
    assert "not bookable" in response.json()["message"]
    response = requests.post(f"{door.api}/jobs", headers=headers, timeout=30,
                             json={"session_id": "no-such-session", "model_id": "m"})
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


def test_the_token_is_read_from_x_auth_token_only(door: Door) -> None:
    url = f"{door.api}/platforms"
    assert requests.get(url, headers={"X-Auth-Token": door.token}, timeout=30).ok
    for headers in ({}, {"Authorization": f"Bearer {door.token}"},
                    {"X-Auth-Token": door.token + "x"}):
        response = requests.get(url, headers=headers, timeout=30)
        assert response.status_code == 401
        assert response.json()["type"] == "denied_authentication"


def test_a_refused_job_queues_nothing(door: Door, project: str) -> None:
    from qio.core import QuantumComputationModel, QuantumComputationParameters, QuantumProgram
    from qiskit import QuantumCircuit

    headers = {"X-Auth-Token": door.token}
    qc = QuantumCircuit(1)
    qc.measure_all()
    session = requests.post(f"{door.api}/sessions", headers=headers, timeout=30, json={
        "project_id": project, "platform_id": AER}).json()
    model = requests.post(f"{door.api}/models", headers=headers, timeout=30, json={
        "project_id": project, "payload": QuantumComputationModel(
            programs=[QuantumProgram.from_qiskit_circuit(qc)]).to_json_str()}).json()
    good = {"session_id": session["id"], "model_id": model["id"],
            "parameters": QuantumComputationParameters(shots=5).to_json_str()}
    for bad in ({"tags": "not-a-list"}, {"name": 7}, {"parameters": "{"},
                {"parameters": QuantumComputationParameters(shots=0).to_json_str()}):
        response = requests.post(f"{door.api}/jobs", headers=headers, timeout=30,
                                 json={**good, **bad})
        assert response.status_code == 400, (bad, response.text)
    listed = requests.get(f"{door.api}/jobs", headers=headers, timeout=30,
                          params={"session_id": session["id"]}).json()
    assert listed == {"jobs": [], "total_count": 0}
    response = requests.post(f"{door.api}/sessions/{session['id']}/terminate",
                             headers=headers, timeout=30)
    assert response.json()["status"] in ("stopping", "stopped")


def test_models_live_in_the_gateways_database(door: Door, project: str) -> None:
    """A model is a row of the gateway's own (private) database, no file of the door's."""
    import sqlite3
    import stat

    from qio.core import QuantumComputationModel, QuantumProgram
    from qiskit import QuantumCircuit

    from qsrv.gateway._users import db_path

    qc = QuantumCircuit(1)
    qc.measure_all()
    payload = QuantumComputationModel(
        programs=[QuantumProgram.from_qiskit_circuit(qc)]).to_json_str()
    response = requests.post(f"{door.api}/models", headers={"X-Auth-Token": door.token},
                             timeout=30, json={"project_id": project, "payload": payload})
    assert response.status_code == 200, response.text
    model_id = response.json()["id"]
    path = db_path(door.data_dir)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        [(stored_project,)] = conn.execute("SELECT project FROM scw_models WHERE id = ?",
                                           (model_id,)).fetchall()
    finally:
        conn.close()
    assert stored_project == project
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(door.data_dir.glob("scaleway*"))
