"""The native door's quantum routes over HTTP, against a real cluster and gateway: every new
route refuses malformed bodies and bad parameters with a 4xx (never a 5xx, never an error in
the log), another user's sessions, batches and jobs are missing (404), no token is 401, and
long-poll waits answer the object once it has reached its state."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from qsrv.gateway._native_quantum import QUANTUM_ROUTES
from tests.gateway.quantum_support import AER, BELL, QuantumEnv, quantum_env
from tests.security.test_inputs import _garbage_bodies

PROGRAM = {"kind": "qiskit.qasm2", "data": BELL}


@pytest.fixture(scope="module")
def env() -> Iterator[QuantumEnv]:
    with quantum_env() as e:
        yield e


def call(env: QuantumEnv, method: str, path: str, token: str | None = "alice",
         **kwargs: Any) -> tuple[int, Any]:
    headers = kwargs.pop("headers", {})
    if token is not None:
        real = {"alice": env.alice_token, "bob": env.bob_token}.get(token, token)
        headers["Authorization"] = f"Bearer {real}"
    response = requests.request(method, env.url + path, headers=headers, timeout=90, **kwargs)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


@pytest.fixture(scope="module")
def objects(env: QuantumEnv) -> dict[str, str]:
    """Alice's session, batch (closed, done) and job, to aim the requests at real objects."""
    status, opened = call(env, "POST", "/v1/sessions", json={"platform": AER})
    assert status == 201 and opened["created"], opened
    session = opened["session"]["id"]
    status, batch = call(env, "POST", "/v1/batches", json={
        "program": PROGRAM, "jobs": [{"shots": 10}, {"shots": 20}], "platform": AER})
    assert status == 201, batch
    status, done = call(env, "GET", f"/v1/batches/{batch['id']}/wait?timeout=60")
    assert status == 200 and done["status"] == "DONE", done
    return {"session_id": session, "batch_id": batch["id"], "job_id": done["jobs"][0]["id"],
            "name": AER}


def _concrete(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return "/v1" + path


def test_every_quantum_route_answers_malformed_bodies_with_a_4xx(
        env: QuantumEnv, objects: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    failures = []
    for route in QUANTUM_ROUTES:
        for ids in (objects, {k: "0" * 32 for k in objects}):
            path = _concrete(route.path, ids)
            for name, kwargs in _garbage_bodies():
                status, body = call(env, route.method, path + "?timeout=0", **dict(kwargs))
                if status >= 500 or (route.method != "GET" and not 400 <= status < 500):
                    failures.append((route.method, path, name, status, str(body)[:200]))
    assert not failures, failures
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and r.name.startswith(("qsrv", "aiohttp"))]
    assert not errors, [r.getMessage() for r in errors]


BAD_REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/sessions", {}),
    ("POST", "/v1/sessions", {"platform": 3}),
    ("POST", "/v1/sessions", {"platform": AER, "max_duration": "3 fortnights"}),
    ("POST", "/v1/sessions", {"platform": AER, "max_idle_duration": [1]}),
    ("POST", "/v1/sessions", {"platform": AER, "colour": "blue"}),
    ("POST", "/v1/sessions", {"platform": AER, "max_duration": "10m",
                              "max_idle_duration": "1h"}),
    ("POST", "/v1/sessions", {"platform": "no.such.platform"}),
    ("POST", "/v1/batches", {"jobs": [{"shots": 1}], "platform": AER}),
    ("POST", "/v1/batches", {"program": "OPENQASM 2.0;", "jobs": [], "platform": AER}),
    ("POST", "/v1/batches", {"program": {"kind": 1, "data": ""}, "platform": AER}),
    ("POST", "/v1/batches", {"program": PROGRAM, "jobs": {"shots": 1}, "platform": AER}),
    ("POST", "/v1/batches", {"program": PROGRAM, "jobs": [{"shots": True}], "platform": AER}),
    ("POST", "/v1/batches", {"program": PROGRAM, "jobs": [{"shots": "10"}], "platform": AER}),
    ("POST", "/v1/batches", {"program": PROGRAM, "jobs": [{"shots": 1, "variables": [1]}],
                             "platform": AER}),
    ("POST", "/v1/batches", {"program": PROGRAM, "jobs": [{"shots": 1, "extra": 1}],
                             "platform": AER}),
    ("POST", "/v1/batches", {"program": PROGRAM, "jobs": [{"shots": 1}], "platform": AER,
                             "open": "yes"}),
    ("POST", "/v1/batches", {"program": PROGRAM, "jobs": [{"shots": 1}], "platform": AER,
                             "tags": "a"}),
    ("POST", "/v1/batches", {"program": PROGRAM, "jobs": [{"shots": 10 ** 9}],
                             "platform": AER}),
    ("POST", "/v1/batches", {"program": {"kind": "qiskit.qasm2", "data": "not qasm"},
                             "jobs": [{"shots": 1}], "platform": AER}),
    ("GET", "/v1/quantum-jobs?limit=101", None),
    ("GET", "/v1/quantum-jobs?limit=-1", None),
    ("GET", "/v1/quantum-jobs?offset=x", None),
    ("GET", "/v1/quantum-jobs?status=FINISHED", None),
    ("GET", "/v1/quantum-jobs?start_date=yesterday", None),
    ("GET", "/v1/quantum-jobs?min_shots=many", None),
    ("GET", "/v1/quantum-jobs?colour=blue", None),
    ("GET", "/v1/batches?open=maybe", None),
    ("GET", "/v1/batches?limit=1000", None),
    ("GET", "/v1/sessions?status=RUNNING_FAST", None),
    ("POST", "/v1/quantum-jobs/cancel", {}),
    ("POST", "/v1/quantum-jobs/cancel", {"filters": {"status": ["NOPE"]}}),
    ("POST", "/v1/quantum-jobs/cancel", {"filters": {"shots": 3}}),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_REQUESTS)
def test_bad_requests_are_4xx_with_a_message(env: QuantumEnv, method: str, path: str,
                                             body: Any) -> None:
    status, answer = call(env, method, path, json=body)
    assert 400 <= status < 500, (status, answer)
    assert answer["error"] and answer["message"], answer


def test_another_users_objects_are_missing(env: QuantumEnv, objects: dict[str, str]) -> None:
    for route in QUANTUM_ROUTES:
        if "{" not in route.path or route.path.startswith("/platforms"):
            continue
        path = _concrete(route.path, objects)
        body: Any = {"/sessions/{session_id}/jobs": {"shots": 1, "program": PROGRAM},
                     "/batches/{batch_id}/jobs": {"jobs": [{"shots": 1}]},
                     "/batches/{batch_id}/tags": {"tags": []}}.get(route.path, {})
        status, answer = call(env, route.method, path + "?timeout=0", token="bob", json=body)
        assert status == 404 and answer["error"] == "not_found", (route.path, status, answer)
    for listing, key in (("/v1/sessions", "sessions"), ("/v1/batches", "batches"),
                         ("/v1/quantum-jobs", "jobs")):
        status, page = call(env, "GET", listing, token="bob")
        assert status == 200 and page["total"] == 0 and page[key] == []
    status, cancelled = call(env, "POST", "/v1/quantum-jobs/cancel", token="bob",
                             json={"filters": {"batch_id": objects["batch_id"]}})
    assert status == 200 and cancelled["jobs"] == []
    status, session = call(env, "GET", f"/v1/sessions/{objects['session_id']}")
    assert status == 200 and session["status"] in ("starting", "running")


def test_no_token_is_401_on_every_quantum_route(env: QuantumEnv,
                                                objects: dict[str, str]) -> None:
    for route in QUANTUM_ROUTES:
        for token in (None, "qsrv_wrong"):
            status, answer = call(env, route.method, _concrete(route.path, objects),
                                  token=token, json={})
            assert status == 401 and answer["error"] == "unauthorized", (route.path, answer)


def test_listing_pages_and_filters(env: QuantumEnv, objects: dict[str, str]) -> None:
    status, page = call(env, "GET", f"/v1/quantum-jobs?batch_id={objects['batch_id']}&limit=1")
    assert status == 200 and page["total"] == 2 and len(page["jobs"]) == 1
    newest = page["jobs"][0]
    assert newest["shots"] == 20  # newest first
    status, second = call(env, "GET", f"/v1/quantum-jobs?batch_id={objects['batch_id']}"
                          f"&limit=1&offset=1&snapshot={page['snapshot']}")
    assert [j["shots"] for j in second["jobs"]] == [10]
    status, page = call(env, "GET", f"/v1/quantum-jobs?batch_id={objects['batch_id']}"
                        "&min_shots=15&status=DONE,ERROR")
    assert [j["shots"] for j in page["jobs"]] == [20]
    status, page = call(env, "GET", f"/v1/batches?id={objects['batch_id']}&status=DONE")
    assert page["total"] == 1 and "program" not in page["batches"][0]
    status, result = call(env, "GET", f"/v1/quantum-jobs/{objects['job_id']}/result")
    assert status == 200 and sum(result["counts"].values()) == 10
    assert set(result["counts"]) <= {"00", "11"} and result["native"]
    status, sessions = call(env, "GET", "/v1/sessions?status=starting,running")
    assert objects["session_id"] in [s["id"] for s in sessions["sessions"]]


def test_long_polls_answer_once_the_object_is_there(env: QuantumEnv) -> None:
    status, opened = call(env, "POST", "/v1/sessions",
                          json={"platform": AER, "deduplication_id": "polls"})
    session = opened["session"]["id"]
    status, job = call(env, "POST", f"/v1/sessions/{session}/jobs",
                       json={"shots": 5, "program": PROGRAM})
    assert status == 201 and job["status"] in ("PENDING", "RUNNING", "DONE")
    status, waited = call(env, "GET", f"/v1/quantum-jobs/{job['id']}/wait?timeout=60")
    assert status == 200 and waited["status"] == "DONE"
    # A session's wait returns its state at the timeout when nothing happens ...
    status, still = call(env, "GET", f"/v1/sessions/{session}/wait?timeout=0.1")
    assert status == 200 and still["status"] in ("starting", "running")
    status, running = call(env, "GET", f"/v1/sessions/{session}/wait?timeout=60&status=running")
    assert running["status"] == "running"
    # ... and answers once it is stopped.
    status, _ = call(env, "POST", f"/v1/sessions/{session}/terminate")
    assert status == 200
    status, stopped = call(env, "GET", f"/v1/sessions/{session}/wait?timeout=60")
    assert stopped["status"] == "stopped" and stopped["reason"] == "terminated"
    status, again = call(env, "POST", f"/v1/sessions/{session}/jobs", json={"shots": 5,
                                                                        "program": PROGRAM})
    assert 400 <= status < 500, again
