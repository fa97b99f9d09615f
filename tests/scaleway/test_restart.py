"""A gateway restarted on the same data directory: the door's models, its jobs' names and the
jobs' results are still there (the door keeps models and notes in its own SQLite file; the
rest is the quantum service's)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import requests
from qio.core import QuantumComputationModel, QuantumComputationParameters, QuantumProgram
from qiskit import QuantumCircuit

from qsrv.gateway import GatewayConfig, add_user
from tests._support.cluster import TOKEN, Cluster
from tests._support.gateway import ThreadedGateway
from tests._support.waiting import wait_for
from tests.scaleway.conftest import AER


def test_models_jobs_and_results_outlive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    qc = QuantumCircuit(2)
    qc.x(0)
    qc.measure_all()
    model_json = QuantumComputationModel(
        programs=[QuantumProgram.from_qiskit_circuit(qc)]).to_json_str()
    project = str(uuid.uuid4())
    with Cluster() as cluster:
        cluster.worker("w1", "--cpus", "1")
        wait_for(lambda: cluster.ready({"w1"}), timeout=60, what="the worker")
        config = GatewayConfig(data_dir=data_dir, port=0, cluster_address=cluster.address,
                               cluster_token=TOKEN, stop_grace_s=2.0)
        token = add_user(data_dir, "alice")[1]
        headers = {"X-Auth-Token": token}

        def call(gateway: ThreadedGateway, method: str, path: str, **kw: Any) -> Any:
            response = requests.request(method, f"{gateway.url}/scaleway/qaas/v1alpha1{path}",
                                        headers=headers, timeout=30, **kw)
            assert response.ok, response.text
            return response.json()

        first = ThreadedGateway(config)
        try:
            wait_for(lambda: any(p["name"] == AER for p in call(first, "GET", "/platforms")[
                "platforms"]), timeout=60, what="the Aer platform")
            [platform] = call(first, "GET", "/platforms", params={"name": AER})["platforms"]
            session = call(first, "POST", "/sessions", json={
                "project_id": project, "platform_id": platform["id"]})
            model = call(first, "POST", "/models", json={"project_id": project,
                                                         "payload": model_json})
            job = call(first, "POST", "/jobs", json={
                "session_id": session["id"], "model_id": model["id"], "name": "before",
                "parameters": QuantumComputationParameters(shots=10).to_json_str()})
            wait_for(lambda: call(first, "GET", f"/jobs/{job['id']}")["status"] == "completed",
                     timeout=120, what="the job")
        finally:
            first.stop()
        second = ThreadedGateway(config)
        try:
            assert call(second, "GET", f"/models/{model['id']}")["id"] == model["id"]
            again = call(second, "GET", f"/jobs/{job['id']}")
            assert (again["name"], again["status"], again["model_id"]) == (
                "before", "completed", model["id"])
            [result] = call(second, "GET", f"/jobs/{job['id']}/results")["job_results"]
            assert result["job_id"] == job["id"] and result["result"]
            listed = call(second, "GET", "/models", params={"project_id": project})
            assert [m["id"] for m in listed["models"]] == [model["id"]]
        finally:
            second.stop()
