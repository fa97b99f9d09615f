"""A qsrv program: sample several random circuits in parallel on the cluster, save the counts.

Runs as a job of the gateway: `get_arguments()` gives what `client.run(...)` was called with,
`qsrv.init()` joins the cluster the gateway runs jobs on (QSRV_ADDRESS / QSRV_TOKEN), each
`@qsrv.distribute_task` call runs on a worker, and `save_result` hands the counts back.

The simulator is a few lines of numpy (a state vector, random single-qubit rotations and a
brick-wall of CNOTs) so the example needs nothing beyond qsrv's own dependencies.
"""

import numpy as np

import qsrv
from qsrv.gateway import get_arguments, save_result


def apply_one_qubit(state, gate, qubit, num_qubits):
    tensor = state.reshape((2,) * num_qubits)
    tensor = np.moveaxis(np.tensordot(gate, tensor, axes=([1], [qubit])), 0, qubit)
    return tensor.reshape(-1)


def apply_cnot(state, control, target, num_qubits):
    tensor = state.reshape((2,) * num_qubits).copy()
    index = [slice(None)] * num_qubits
    index[control] = 1
    flipped = tensor[tuple(index)]
    axis = target - 1 if target > control else target
    tensor[tuple(index)] = np.flip(flipped, axis=axis)
    return tensor.reshape(-1)


def random_rotation(rng):
    theta, phi, lam = rng.uniform(0, 2 * np.pi, size=3)
    return np.array([
        [np.cos(theta / 2), -np.exp(1j * lam) * np.sin(theta / 2)],
        [np.exp(1j * phi) * np.sin(theta / 2), np.exp(1j * (phi + lam)) * np.cos(theta / 2)],
    ])


@qsrv.distribute_task(target={"cpu": 1})
def sample_random_circuit(num_qubits, depth, shots, seed):
    """Counts of ``shots`` measurements of one random circuit, as {bitstring: count}."""
    rng = np.random.default_rng(seed)
    state = np.zeros(2 ** num_qubits, dtype=complex)
    state[0] = 1.0
    for layer in range(depth):
        for qubit in range(num_qubits):
            state = apply_one_qubit(state, random_rotation(rng), qubit, num_qubits)
        for control in range(layer % 2, num_qubits - 1, 2):
            state = apply_cnot(state, control, control + 1, num_qubits)
    probabilities = np.abs(state) ** 2
    outcomes = rng.choice(2 ** num_qubits, size=shots, p=probabilities / probabilities.sum())
    values, counts = np.unique(outcomes, return_counts=True)
    return {format(int(v), f"0{num_qubits}b"): int(c) for v, c in zip(values, counts, strict=True)}


def main():
    args = get_arguments()
    num_circuits = args.get("num_circuits", 4)
    num_qubits = args.get("num_qubits", 4)
    depth = args.get("depth", 6)
    shots = args.get("shots", 1000)
    seed = args.get("seed", 0)

    qsrv.init()
    refs = [sample_random_circuit(num_qubits, depth, shots, seed + i)
            for i in range(num_circuits)]
    print(f"submitted {len(refs)} random {num_qubits}-qubit circuits of depth {depth}")
    all_counts = qsrv.get(refs)
    for i, counts in enumerate(all_counts):
        top = max(counts, key=counts.get)
        print(f"circuit {i}: {len(counts)} distinct outcomes, most frequent {top} "
              f"({counts[top]}/{shots})")
    save_result({"num_qubits": num_qubits, "shots": shots, "counts": all_counts})


if __name__ == "__main__":
    main()
