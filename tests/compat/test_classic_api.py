"""The classic Quantum Serverless API (``qsrv.compat.quantum_serverless``) on a real gateway.

One program, written against the classic API, runs through both doors of the same gateway:
qsrv's (``GatewayProvider.run_program``, after a password login) and the ``qiskit-serverless``
client's. Inside, ``QuantumServerless().context()`` joins the gateway's cluster for its tasks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from qiskit import QuantumCircuit
from qiskit_serverless import ServerlessClient

from qsrv.compat.quantum_serverless import (
    ComputeResource,
    GatewayProvider,
    Program,
    Provider,
    QuantumServerless,
    QuantumServerlessException,
    distribute_task,
    get,
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


CONFIGURATION = {"providers": [
    {"name": "cluster", "compute_resource": {"name": "nodes", "host": "10.0.0.5",
                                             "port_interactive": 7420}},
    {"name": "gateway", "host": "http://10.0.0.5:7421", "token": "qsrv_token"},
]}


def test_classic_configurations_are_read(tmp_path: Path) -> None:
    """The earliest form, ``QuantumServerless(config)`` or ``load_configuration(path)``: the
    local provider and the configured ones, the last selected, each found by name."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(CONFIGURATION))
    for serverless in (QuantumServerless(CONFIGURATION),
                       QuantumServerless.load_configuration(path),
                       QuantumServerless.load_configuration(str(path))):
        assert [p.name for p in serverless.providers()] == ["local", "cluster", "gateway"]
        assert repr(serverless) == "<QuantumServerless | providers [local, cluster, gateway]>"
        cluster = serverless.providers()[1]
        assert cluster.compute_resource == ComputeResource(name="nodes", host="10.0.0.5",
                                                           port_interactive=7420)
        assert serverless.set_provider("cluster") is serverless
        assert serverless.providers()[2].host == "http://10.0.0.5:7421"
    assert [p.name for p in QuantumServerless({"providers": []}).providers()] == ["local"]


@pytest.mark.parametrize(("providers", "message"), [
    ({"providers": [{"name": "x", "gateway": "y"}]}, "provider 'x': qsrv reads name, host"),
    ({"providers": [{"name": "x", "compute_resource": {"name": "c", "image": "i"}}]},
     "compute resource: qsrv reads name, host, port_interactive"),
    ({"clusters": []}, "the configuration: qsrv reads providers; not clusters"),
    ({"providers": [{"compute_resource": {}}]}, "an object with a 'name'"),
    ({"providers": {"name": "x"}}, "a list of providers"),
    ("local", "QuantumServerless takes a Provider"),
    (["local", "gateway"], r"got 'local' \(a str\) in the list"),
])
def test_classic_forms_qsrv_does_not_read_are_refused_at_once(providers: object,
                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantumServerless(providers)  # type: ignore[arg-type]


def test_a_configuration_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("providers: [local]")
    with pytest.raises(ConfigError, match="not a JSON configuration"):
        QuantumServerless.load_configuration(path)
    path.write_text("[]")
    with pytest.raises(ConfigError, match="a JSON object"):
        QuantumServerless.load_configuration(path)


@distribute_task(target={"cpu": 1})
def double(x: int) -> int:
    return 2 * x


def test_run_program_after_context_and_tasks(local_cluster: dict[str, object],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             write_program: Callable[..., Path]) -> None:
    """A notebook's order: the local cluster is up (context(), tasks) before the first
    run_program, which then starts the cluster's gateway; later calls reuse it."""
    monkeypatch.setenv("QSRV_DATA_DIR", str(tmp_path / "data"))
    for name in ("QSRV_GATEWAY", "QSRV_GATEWAY_TOKEN"):  # set by the gateway's start; undone
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    serverless = QuantumServerless()
    with serverless.context():
        assert get([double(x) for x in range(3)]) == [0, 2, 4]
    program = Program("after-tasks", "main.py", str(write_program(CLASSIC_PROGRAM)))
    job = serverless.run_program(program, arguments={"xs": [1, 2], "factor": 3,
                                                      "circuit": circuit()})
    assert job.result() == {"squares": [3, 12], "qubits": 4}
    with serverless:  # the earliest form of context()
        assert get(double(5)) == 10
    again = serverless.run_program("after-tasks", arguments={"xs": [3], "factor": 1,
                                                             "circuit": circuit()})
    assert again.result() == {"squares": [9], "qubits": 4}
    assert {job.job_id, again.job_id} <= {j.job_id for j in serverless.get_jobs()}
