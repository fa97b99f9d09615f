"""A variational loop on an open batch: each job's variables come from the previous results.

    python examples/quantum_service/variational_loop.py

The circuit prepares ry(theta)|0>; the loop looks for the theta that makes "1" certain
(theta = pi), taking a finite-difference step of the measured probability each round. Every
round is one job added to the same open batch, so all of them run in order on one reserved
platform, whose executor stays warm between jobs. The batch is closed at the end.

With QSRV_GATEWAY and QSRV_GATEWAY_TOKEN set, it uses that gateway; otherwise it starts a
local cluster with its gateway (``qsrv.init(gateway=True)``).
"""

from __future__ import annotations

import math
import os
import tempfile

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

import qsrv
from qsrv.gateway import Batch, GatewayClient
from qsrv.quantum import engines

PLATFORM = "aer.statevector.cpu"
SHOTS = 2000
ROUNDS = 12


def p_one(batch: Batch) -> float:
    """The probability of "1" measured by the batch's last job."""
    last = batch.ordered_jobs[-1]
    counts = last.result or {}
    return counts.get("1", 0) / last.shots


def main() -> None:
    if not os.environ.get("QSRV_GATEWAY"):
        qsrv.init(gateway=True, data_dir=tempfile.mkdtemp(prefix="qsrv-variational-"))
        engines.platforms()  # returns once the local worker has probed its engines
    client = GatewayClient()
    theta = Parameter("theta")
    circuit = QuantumCircuit(1, 1)
    circuit.ry(theta, 0)
    circuit.measure(0, 0)

    value, step = 0.3, 0.6
    batch = client.create_batch(circuit, [{"shots": SHOTS, "variables": {"theta": value}}],
                                platform=PLATFORM, open=True, wait=True)
    best = p_one(batch)
    print(f"batch {batch.id} open on {batch.platform}")
    for round_ in range(ROUNDS):
        trial = value + step
        batch.add_jobs([{"shots": SHOTS, "variables": {"theta": trial}}], wait=True)
        measured = p_one(batch)
        if measured > best:
            value, best = trial, measured
        else:
            step = -step / 2  # overshot: turn back with a smaller step
        print(f"round {round_}: theta={trial:.3f} P(1)={measured:.3f} best={value:.3f}")
    batch.close(wait=True)
    print(f"batch {batch.status} after {len(batch.ordered_jobs)} jobs")
    print(f"theta={value:.3f} (pi={math.pi:.3f}) P(1)={best:.3f}")


if __name__ == "__main__":
    main()
