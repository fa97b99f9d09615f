"""Distributed sampling of random circuits with @distribute_task and get.

Each task transpiles one circuit for Aer and samples it; the driver collects the counts.
"""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit.random import random_circuit

import qsrv


@qsrv.distribute_task(target={"cpu": 1})
def sample(circuit: QuantumCircuit, shots: int, seed: int) -> dict[str, int]:
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    sim = AerSimulator(max_parallel_threads=1)
    return dict(sim.run(transpile(circuit, sim), shots=shots, seed_simulator=seed)
                .result().get_counts())


def main() -> None:
    qsrv.init(num_cpus=2)
    circuits = [random_circuit(5, 4, measure=True, seed=i) for i in range(12)]
    refs = [sample(c, 500, seed=i) for i, c in enumerate(circuits)]  # returns at once
    counts = qsrv.get(refs)
    print(f"sampled {len(counts)} circuits; shots per circuit: "
          f"{sorted({sum(c.values()) for c in counts})}")
    top = max(counts[0], key=counts[0].get)
    print(f"circuit 0: most frequent {top} ({counts[0][top]} of 500)")
    qsrv.shutdown()


if __name__ == "__main__":
    main()
