"""A small variational loop (VQE-style): each energy evaluation is a task.

Minimises <H> of a 2-qubit Hamiltonian over a 2-layer ansatz with parameter-shift gradients;
the 2 * (number of parameters) shifted energies of every step run in parallel as tasks.
"""

from __future__ import annotations

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit.library import real_amplitudes
from qiskit.quantum_info import SparsePauliOp

import qsrv

HAMILTONIAN = SparsePauliOp.from_list([("ZZ", 1.0), ("XI", 0.5), ("IX", 0.5)])


@qsrv.distribute_task(target={"cpu": 1})
def energy(ansatz: QuantumCircuit, hamiltonian: SparsePauliOp, params: np.ndarray) -> float:
    from qiskit_aer.primitives import EstimatorV2

    return float(EstimatorV2().run([(ansatz, hamiltonian, params)]).result()[0].data.evs)


def main() -> None:
    qsrv.init(num_cpus=2)
    ansatz = real_amplitudes(2, reps=2)
    a_ref, h_ref = qsrv.put(ansatz), qsrv.put(HAMILTONIAN)
    params = np.full(ansatz.num_parameters, 0.1)
    first = qsrv.get(energy(a_ref, h_ref, params))
    for _ in range(40):
        shifts = np.eye(len(params)) * (np.pi / 2)
        refs = [energy(a_ref, h_ref, params + s) for s in shifts] + \
               [energy(a_ref, h_ref, params - s) for s in shifts]
        values = np.array(qsrv.get(refs))
        grad = (values[:len(params)] - values[len(params):]) / 2
        params = params - 0.4 * grad
    final = qsrv.get(energy(a_ref, h_ref, params))
    exact = float(np.linalg.eigvalsh(HAMILTONIAN.to_matrix()).min())
    print(f"start energy {first:.4f}; final energy {final:.4f}; exact ground {exact:.4f}")
    print("converged:", abs(final - exact) < 1e-2)
    qsrv.shutdown()


if __name__ == "__main__":
    main()
