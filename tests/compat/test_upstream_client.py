"""The real ``qiskit-serverless`` 0.37 client against a real ``qsrv gateway`` + cluster.

Everything the client does goes over HTTP to the gateway started in ``conftest``; jobs are real
processes that use the client's own in-program runtime (``get_arguments``, ``save_result``,
``update_status``, ``send_error``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit_serverless import QiskitFunction, ServerlessClient
from qiskit_serverless.exception import QiskitServerlessException

from qsrv.gateway import Client
from tests._support import Gate
from tests._support.deployment import Deployment

MAIN = """
import os, socket
from qiskit_serverless import Job, get_arguments, save_result, update_status
from helper import double

args = get_arguments()
print("arguments:", sorted(args))
update_status(Job.MAPPING)
with open(os.path.join(os.environ["DATA_PATH"], "input.txt")) as fh:
    uploaded = fh.read()
with open(os.path.join(os.environ["DATA_PATH"], "output.txt"), "w") as fh:
    fh.write("written by the job")
gate = socket.create_connection(("127.0.0.1", args["gate_port"]))
gate.sendall(b"mapping\\n")
gate.recv(1)  # the test checks the sub-status, then lets the job finish
save_result({
    "circuit": args["circuit"], "doubled": double(args["array"]), "uploaded": uploaded,
    "token": os.environ["ENV_JOB_GATEWAY_TOKEN"],
})
"""


def client(deployment: Deployment, token: str | None = None) -> ServerlessClient:
    return ServerlessClient(host=deployment.url, token=token or deployment.alice,
                            channel="local")


def http(method: str, url: str, token: str, data: bytes | None = None,
         content_type: str = "application/x-www-form-urlencoded") -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_whole_flow(deployment: Deployment, write_program: Callable[..., Path],
                        gate: Gate, tmp_path: Path) -> None:
    alice = client(deployment)
    working_dir = write_program(MAIN, **{"helper.py": "def double(a):\n    return a * 2\n"})
    function = alice.upload(QiskitFunction(title="hello-qsrv", entrypoint="main.py",
                                           working_dir=str(working_dir),
                                           dependencies=["numpy"], description="demo"))
    assert function is not None and function.title == "hello-qsrv"
    assert "hello-qsrv" in [f.title for f in alice.functions()]
    fetched = alice.function("hello-qsrv")
    assert fetched is not None
    assert (fetched.entrypoint, fetched.description) == ("main.py", "demo")

    (tmp_path / "input.txt").write_text("hello from the user")
    alice.file_upload(str(tmp_path / "input.txt"), fetched)
    assert alice.files(fetched) == ["input.txt"]

    circuit = QuantumCircuit(3)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.rz(0.25, 2)
    circuit.measure_all()
    array = np.arange(6, dtype=float).reshape(2, 3)
    job = fetched.run(circuit=circuit, array=array, gate_port=gate.port)
    conn = gate.accept()
    assert conn.recv(64) == b"mapping\n"
    assert job.status() == "RUNNING: MAPPING"  # update_status() reached the gateway
    conn.sendall(b"x")

    result = job.result(cadence=0.2)
    assert job.status() == "DONE"
    assert result["circuit"] == circuit
    np.testing.assert_array_equal(result["doubled"], array * 2)
    assert result["uploaded"] == "hello from the user"
    assert "arguments: ['array', 'circuit', 'gate_port']" in job.logs()

    # What the job wrote into DATA_PATH is the user's to download, then delete.
    assert alice.files(fetched) == ["input.txt", "output.txt"]
    name = alice.file_download("output.txt", fetched, download_location=str(tmp_path))
    assert name is not None and (tmp_path / name).read_text() == "written by the job"
    assert "deleted" in alice.file_delete("output.txt", fetched)
    assert alice.files(fetched) == ["input.txt"]

    # The job's own token dies with it, and never was a user token.
    job_token = result["token"]
    status, body = http("PATCH", f"{deployment.url}/api/v1/jobs/{job.job_id}/sub_status/",
                        job_token, b"sub_status=MAPPING")
    assert status == 401 and body["message"] == "unknown token"
    assert http("GET", f"{deployment.url}/api/v1/jobs/", job_token)[0] == 401

    # One model, two doors: qsrv's own client sees the same job and its result.
    own = Client(deployment.url, deployment.alice).job(job.job_id)
    assert str(own.status()) == "SUCCEEDED"
    same = own.result()
    assert same["uploaded"] == "hello from the user"
    assert same["circuit"]["__type__"] == "QuantumCircuit"  # plain JSON for qsrv's client


def test_a_failing_program_is_reported_by_the_client(
        deployment: Deployment, write_program: Callable[..., Path]) -> None:
    alice = client(deployment)
    crash = alice.upload(QiskitFunction(title="crash", entrypoint="main.py", working_dir=str(
        write_program("def step():\n    raise ValueError('boom-42')\n\nstep()\n"))))
    reporting = alice.upload(QiskitFunction(title="reports", entrypoint="main.py", working_dir=str(
        write_program("""
            import sys
            from qiskit_serverless import send_error
            assert send_error(code="QPU_DOWN", message="no backend today",
                              exception="RuntimeError")
            sys.exit(3)
        """))))
    assert crash is not None and reporting is not None
    crashed, reported = crash.run(), reporting.run()

    with pytest.raises(QiskitServerlessException) as info:
        crashed.result(cadence=0.2)
    text = str(info.value)
    assert "ValueError: boom-42" in text and "Traceback" in text and "step()" in text
    assert crashed.status() == "ERROR"

    with pytest.raises(QiskitServerlessException, match="no backend today") as info:
        reported.result(cadence=0.2)
    assert "QPU_DOWN" in str(info.value)
    assert [e.event_type for e in reported.events(type="ERROR")] == ["ERROR"]

    failed = alice.jobs(status="ERROR", limit=10)
    assert {j.job_id for j in failed} >= {crashed.job_id, reported.job_id}


def test_stop_and_list_jobs(deployment: Deployment, write_program: Callable[..., Path],
                            gate: Gate) -> None:
    alice = client(deployment)
    blocker = alice.upload(QiskitFunction(title="blocker", entrypoint="main.py", working_dir=str(
        write_program("""
            import json, os, socket
            port = json.load(open(os.environ["ARGUMENTS_PATH"]))["port"]
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"started\\n")
            s.recv(1)
        """))))
    assert blocker is not None
    job = blocker.run(port=gate.port)
    gate.accept()
    assert job.status() == "RUNNING"

    # With channel="local" the client fails before sending anything unless given a service.
    with pytest.raises(TypeError):
        job.cancel()
    assert job.status() == "RUNNING"
    assert "stopped" in job.cancel(service="ignored by qsrv")
    assert job.status() == "CANCELED"
    assert job.result() == {}

    ours = alice.jobs(function=blocker, limit=10)
    assert [j.job_id for j in ours] == [job.job_id]
    assert [j.job_id for j in alice.jobs(status="CANCELED")] == [job.job_id]
    # a second job of alice's, whatever the other tests did before
    listed = alice.upload(QiskitFunction(title="listed", entrypoint="main.py",
                                         working_dir=str(write_program("print('listed')\n"))))
    assert listed is not None
    listed.run().result(cadence=0.2)
    everything = alice.jobs(limit=100)
    assert len(everything) >= 2
    assert [j.job_id for j in alice.jobs(limit=1, offset=0)] == [everything[0].job_id]
    assert [j.job_id for j in alice.jobs(limit=1, offset=1)] == [everything[1].job_id]
    status, page = http("GET", f"{deployment.url}/api/v1/jobs?limit=1", deployment.alice)
    assert status == 200 and page["count"] == len(everything) and page["previous"] is None
    assert "offset=1" in page["next"] and page["results"][0]["id"] == everything[0].job_id


def test_users_are_isolated(deployment: Deployment, write_program: Callable[..., Path]) -> None:
    alice = client(deployment)
    function = alice.upload(QiskitFunction(title="private", entrypoint="main.py",
                                           working_dir=str(write_program("print('hi')\n"))))
    assert function is not None
    job = function.run()
    bob = client(deployment, deployment.bob)
    assert "private" not in [f.title for f in bob.functions()]
    assert job.job_id not in [j.job_id for j in bob.jobs(limit=1000)]
    for attempt in (lambda: bob.job(job.job_id), lambda: bob.function("private"),
                    lambda: bob.files(function)):
        with pytest.raises(QiskitServerlessException, match="404"):
            attempt()
    with pytest.raises(QiskitServerlessException, match="Credentials couldn't be verified"):
        client(deployment, "qsrv_not-a-token")
    job.result(cadence=0.2)
    assert job.logs().strip() == "hi"


def test_refusals_say_why(deployment: Deployment, write_program: Callable[..., Path]) -> None:
    alice = client(deployment)
    with pytest.raises(QiskitServerlessException, match="not-a-real-package-xyz"):
        alice.upload(QiskitFunction(title="deps", entrypoint="main.py",
                                    working_dir=str(write_program("print(1)\n")),
                                    dependencies=["not-a-real-package-xyz>=1"]))
    with pytest.raises(QiskitServerlessException, match="no program 'never-uploaded'"):
        alice.run("never-uploaded")
