"""Expectation values of several circuits with one observable shared through put.

The observable is stored once in the cluster; every task receives it by ref.
"""

from __future__ import annotations

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

import qsrv


@qsrv.distribute_task(target={"cpu": 1})
def expectation(circuit: QuantumCircuit, observable: SparsePauliOp) -> float:
    from qiskit_aer.primitives import EstimatorV2

    return float(EstimatorV2().run([(circuit, observable)]).result()[0].data.evs)


def rotated(angle: float) -> QuantumCircuit:
    qc = QuantumCircuit(4)
    for q in range(4):
        qc.ry(angle, q)
    return qc


def main() -> None:
    qsrv.init(num_cpus=2)
    n = 4
    zz = SparsePauliOp.from_sparse_list([("ZZ", [i, i + 1], 1.0) for i in range(n - 1)],
                                        num_qubits=n)
    obs_ref = qsrv.put(zz)  # stored once, shared by every task
    angles = np.linspace(0, np.pi, 5)
    values = qsrv.get([expectation(rotated(a), obs_ref) for a in angles])
    exact = [(n - 1) * np.cos(a) ** 2 for a in angles]  # <ZZ> = cos^2 per neighbouring pair
    print("angles:", [round(float(a), 3) for a in angles])
    print("<sum ZZ>:", [round(v, 6) for v in values])
    print("matches exact:", bool(np.allclose(values, exact, atol=1e-9)))
    qsrv.shutdown()


if __name__ == "__main__":
    main()
