"""The classic Quantum Serverless API (``qsrv.compat.quantum_serverless``) on a real gateway.

One program, written against the classic API, runs through both doors of the same gateway:
qsrv's (``GatewayProvider.run_program``, after a password login) and the ``qiskit-serverless``
client's. Inside, ``QuantumServerless().context()`` joins the gateway's cluster for its tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from qiskit import QuantumCircuit
from qiskit_serverless import ServerlessClient

from qsrv.compat.quantum_serverless import (
    GatewayProvider,
    Program,
    Provider,
    QuantumServerless,
    QuantumServerlessException,
    distribute_task,
)
from qsrv.errors import ConfigError, JobFailedError, UnauthorizedError
from tests._support.deployment import ALICE_PASSWORD, Deployment

CLASSIC_PROGRAM = """
from qsrv.compat.quantum_serverless import (
    QuantumServerless, distribute_task, get, get_arguments, put, save_result)

@distribute_task(target={"cpu": 1})
def scaled_square(x, factor):
    return factor * x * x

arguments = get_arguments()
serverless = QuantumServerless()
with serverless.context():
    factor = put(arguments["factor"])
    squares = get([scaled_square(x, factor) for x in arguments["xs"]])
print("squares:", squares)
save_result({"squares": squares, "qubits": arguments["circuit"].num_qubits})
"""


def circuit() -> QuantumCircuit:
    qc = QuantumCircuit(4)
    qc.h(range(4))
    return qc


def test_gateway_provider_with_password_runs_a_classic_program(
        deployment: Deployment, write_program: Callable[..., Path]) -> None:
    provider = GatewayProvider(name="mine", host=deployment.url, username="alice",
                               password=ALICE_PASSWORD)
    serverless = QuantumServerless([Provider("local"), provider]).set_provider("mine")
    program = Program("classic-squares", "main.py", str(write_program(CLASSIC_PROGRAM)),
                      description=None, dependencies=["numpy"])
    job = serverless.run_program(program, arguments={"xs": [1, 2, 3], "factor": 10,
                                                      "circuit": circuit()})
    assert job.result() == {"squares": [10, 40, 90], "qubits": 4}
    assert job.status() == "SUCCEEDED"
    assert "squares: [10, 40, 90]" in job.logs()
    assert job.job_id in {j.job_id for j in serverless.get_jobs(limit=50)}
    assert "classic-squares" in serverless.get_programs()

    # The same program through the other door: JSON arguments and result, the client's codec.
    upstream = ServerlessClient(host=deployment.url, token=deployment.alice, channel="local")
    function = upstream.function("classic-squares")
    assert function is not None
    other = function.run(xs=[4, 5], factor=2, circuit=circuit())
    assert other.result(cadence=0.2) == {"squares": [32, 50], "qubits": 4}

    # The token the login issued is alice's: the provider sees the job of the other door.
    assert serverless.get_job_by_id(other.job_id).status() == "SUCCEEDED"


def test_login_failures_and_failed_programs(deployment: Deployment,
                                            write_program: Callable[..., Path]) -> None:
    with pytest.raises(UnauthorizedError):
        GatewayProvider(host=deployment.url, username="alice", password="not the password")
    with pytest.raises(UnauthorizedError):
        GatewayProvider(host=deployment.url, username="nobody", password=ALICE_PASSWORD)
    with pytest.raises(UnauthorizedError):
        GatewayProvider(host=deployment.url, token="qsrv_wrong")
    assert QuantumServerlessException is not None
    provider = GatewayProvider(host=deployment.url, token=deployment.bob)
    job = provider.run_program(Program("fails", "main.py",
                                       str(write_program("raise KeyError('lost')\n"))))
    with pytest.raises(JobFailedError, match="KeyError: 'lost'"):
        job.result()
    with pytest.raises(ConfigError, match="runs programs"):
        provider.context()
    with pytest.raises(ConfigError, match="not-installed-anywhere"):
        provider.run_program(Program("deps", "main.py", str(write_program("pass\n")),
                                     dependencies=["not-installed-anywhere"]))


def test_provider_selection_and_task_options() -> None:
    local = Provider("local")
    other = Provider("other")
    serverless = QuantumServerless([local, other])
    assert serverless.providers() == [local, other]
    assert serverless.set_provider(0).set_provider("local") is serverless
    with pytest.raises(ConfigError, match="'missing' is not one of"):
        serverless.context("missing")
    with pytest.raises(ConfigError, match="no provider at index 5"):
        serverless.set_provider(5)
    with pytest.raises(ConfigError, match="not-a-package-qsrv"):
        distribute_task(pip=["not-a-package-qsrv"])
    task = distribute_task(target={"cpu": 2, "mem": 8})(lambda: 1)
    assert callable(task)
    with pytest.raises(ConfigError):
        distribute_task(target={"cpu": -1})(lambda: 1)
