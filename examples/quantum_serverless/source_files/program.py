"""Quickstart program: samples circuits in parallel and saves their quasi-distributions."""

from qiskit import QuantumCircuit

from qsrv.compat.qiskit_primitives import Sampler
from qsrv.compat.quantum_serverless import distribute_task, get, get_arguments, save_result


# 1. a function that runs remotely, one call per circuit
@distribute_task()
def distributed_sample(circuit: QuantumCircuit):
    """The quasi-distribution of one circuit's measurements."""
    return Sampler().run(circuit).result().quasi_dists[0]


# 2. the program's arguments: the circuits to sample
arguments = get_arguments()
circuits = arguments.get("circuits", [])

# 3. one task per circuit, all running at once: references come back immediately
function_references = [distributed_sample(circuit) for circuit in circuits]

# 4. collect the results of every task
collected_results = get(function_references)

# 5. the job's result, read later with job.result()
save_result({"quasi_dists": collected_results})
