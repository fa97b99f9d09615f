"""The classic Quantum Serverless program: sample random circuits in parallel, save the result.

Runs as a job (see ../run_program.py). Written against the classic API; only the import line
names qsrv.
"""

from qiskit.circuit.random import random_circuit
from qiskit.primitives import StatevectorSampler

from qsrv.compat.quantum_serverless import (
    QuantumServerless,
    distribute_task,
    get,
    get_arguments,
    save_result,
)


@distribute_task(target={"cpu": 1})
def distributed_sample(circuit, shots, seed):
    """Counts of ``shots`` measurements of ``circuit``, as {bitstring: count}."""
    sampler = StatevectorSampler(seed=seed)
    return sampler.run([circuit], shots=shots).result()[0].data.meas.get_counts()


arguments = get_arguments()
num_circuits = arguments.get("num_circuits", 3)
shots = arguments.get("shots", 1000)
seed = arguments.get("seed", 0)

circuits = [random_circuit(2, 2, seed=seed + i) for i in range(num_circuits)]
for circuit in circuits:
    circuit.measure_all()

serverless = QuantumServerless()
with serverless.context():
    # run the tasks in parallel: each call returns a reference at once
    sample_refs = [distributed_sample(circuit, shots, seed + i)
                   for i, circuit in enumerate(circuits)]
    counts = get(sample_refs)

print(f"sampled {len(counts)} random circuits, {shots} shots each")
save_result({"counts": counts, "shots": shots})
