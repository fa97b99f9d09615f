"""Fixtures for the quantum service's tests: a real cluster (``qsrv scheduler`` and ``qsrv
worker`` processes), a real gateway in this process (``ThreadedGateway``) joined to it as a
driver, real SQLite files.

``Quantum`` calls the gateway's ``QuantumService`` on the gateway's own event loop from the
test's thread, as the doors do, so each test reads as plain calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qsrv.gateway import GatewayConfig, add_user
from qsrv.gateway._models import User
from qsrv.quantum import engines
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster
from tests._support.gateway import ThreadedGateway

AER = "aer.statevector.cpu"
BELL = ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\n'
        'cx q[0],q[1];\nmeasure q -> c;\n')


def bell() -> engines.Program:
    return engines.Program("qiskit.qasm2", BELL)


def rotation() -> engines.Program:
    """A one-qubit circuit with a parameter ``theta`` (QPY keeps it)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter

    qc = QuantumCircuit(1, 1)
    qc.ry(Parameter("theta"), 0)
    qc.measure(0, 0)
    return engines.program_from(qc)


def slow(qubits: int = 18, layers: int = 150) -> engines.Program:
    """A circuit that takes a while to simulate (seconds), to catch a job while it runs."""
    lines = ['OPENQASM 2.0;', 'include "qelib1.inc";', f'qreg q[{qubits}];',
             f'creg c[{qubits}];']
    for layer in range(layers):
        for q in range(qubits):
            lines.append(f"rx({0.1 + layer * 0.01}) q[{q}];")
        for q in range(layer % 2, qubits - 1, 2):
            lines.append(f"cx q[{q}],q[{q + 1}];")
    lines.append("measure q -> c;")
    return engines.Program("qiskit.qasm2", "\n".join(lines) + "\n")


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
    return fn(*args, **kw)


class Quantum:
    """The gateway's QuantumService, called from the test's thread."""

    def __init__(self, gateway: ThreadedGateway) -> None:
        self.gateway = gateway

    @property
    def service(self) -> Any:
        return self.gateway.server.service.quantum

    def __getattr__(self, name: str) -> Callable[..., Any]:
        attr = getattr(self.service, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **kw: self.gateway.call(attr(*a, **kw), timeout=180)
        return lambda *a, **kw: self.gateway.call(_call(attr, a, kw), timeout=60)

    def gather(self, *coros: Any) -> list[Any]:
        """Run coroutines of the service concurrently on the gateway's loop."""
        async def together() -> list[Any]:
            return list(await asyncio.gather(*coros, return_exceptions=True))
        result: list[Any] = self.gateway.call(together(), timeout=180)
        return result

    def user(self, name: str) -> User:
        store = self.gateway.server.service.store
        found = self.gateway.call(_call(store.user_by_name, (name,), {}))
        assert found is not None
        return found  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    c.worker("w1", "--cpus", "4")
    try:
        wait_for(lambda: c.ready({"w1"}), timeout=120)
        yield c
    finally:
        c.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    add_user(path, "alice")
    add_user(path, "bob")
    return path


@pytest.fixture
def make_gateway(data_dir: Path, cluster: Cluster) -> Iterator[Callable[..., ThreadedGateway]]:
    started: list[ThreadedGateway] = []

    def make(**overrides: Any) -> ThreadedGateway:
        config = GatewayConfig(data_dir=data_dir, port=0, cluster_address=cluster.address,
                               cluster_token=TOKEN)
        gateway = ThreadedGateway(dataclasses.replace(config, **overrides))
        started.append(gateway)
        return gateway

    yield make
    for gateway in reversed(started):
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., ThreadedGateway]) -> ThreadedGateway:
    return make_gateway()


@pytest.fixture
def q(gateway: ThreadedGateway) -> Quantum:
    return Quantum(gateway)


@pytest.fixture
def alice(q: Quantum) -> User:
    return q.user("alice")


@pytest.fixture
def bob(q: Quantum) -> User:
    return q.user("bob")


@pytest.fixture(autouse=True)
def _no_inherited_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QSRV_GATEWAY", "QSRV_GATEWAY_TOKEN", "QSRV_ADDRESS", "QSRV_TOKEN"):
        monkeypatch.delenv(name, raising=False)
