"""A real cluster (``qsrv scheduler`` and ``qsrv worker`` processes) with a real gateway joined
to it, for the tests of the quantum service's native door, Python client and CLI.

``quantum_env()`` is a context manager giving a ``QuantumEnv``: the gateway's URL, the tokens
of two users (alice, bob), their clients. One per test module: the cluster takes seconds to
start.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qsrv.gateway import Client, GatewayConfig, add_user
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster
from tests._support.gateway import ThreadedGateway

AER = "aer.statevector.cpu"
BELL = ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\n'
        'cx q[0],q[1];\nmeasure q -> c;\n')


def slow_qasm(qubits: int = 20, layers: int = 400) -> str:
    """OpenQASM of a circuit that takes seconds to simulate."""
    lines = ['OPENQASM 2.0;', 'include "qelib1.inc";', f"qreg q[{qubits}];",
             f"creg c[{qubits}];"]
    for layer in range(layers):
        lines += [f"rx({0.1 + layer * 0.01}) q[{q}];" for q in range(qubits)]
        lines += [f"cx q[{q}],q[{q + 1}];" for q in range(layer % 2, qubits - 1, 2)]
    return "\n".join([*lines, "measure q -> c;", ""])


@dataclass
class QuantumEnv:
    cluster: Cluster
    gateway: ThreadedGateway
    data_dir: Path
    alice_token: str
    bob_token: str

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def alice(self) -> Client:
        return Client(self.url, self.alice_token)

    @property
    def bob(self) -> Client:
        return Client(self.url, self.bob_token)


@contextlib.contextmanager
def quantum_env(cpus: int = 4) -> Iterator[QuantumEnv]:
    with tempfile.TemporaryDirectory(prefix="qsrv-quantum-") as tmp:
        data_dir = Path(tmp) / "data"
        alice = add_user(data_dir, "alice")[1]
        bob = add_user(data_dir, "bob")[1]
        cluster = Cluster()
        gateway = None
        try:
            cluster.worker("w1", "--cpus", str(cpus))
            wait_for(lambda: cluster.ready({"w1"}), timeout=120)
            gateway = ThreadedGateway(GatewayConfig(
                data_dir=data_dir, port=0, cluster_address=cluster.address,
                cluster_token=TOKEN))
            yield QuantumEnv(cluster, gateway, data_dir, alice, bob)
        finally:
            if gateway is not None:
                gateway.stop()
            cluster.stop()
