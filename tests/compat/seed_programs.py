"""The two seed-style Quantum Serverless programs, as they were written for
``quantum_serverless`` and qiskit < 2 (``from qiskit.primitives import Sampler, Estimator``,
the V1 primitives), and the one change that moves them to qsrv: their import lines.

``examples/quantum_serverless/source_files/program.py`` and
``examples/quantum_serverless/expectation_values.py`` are ``with_qsrv_imports`` of these texts,
character for character (tests/compat/test_seed_programs.py checks it and runs them).
"""

from __future__ import annotations

#: The quickstart program: a job that samples the circuits it is given, in parallel, with the
#: V1 Sampler (exact quasi-distributions, as qiskit's reference Sampler gave without shots).
QUICKSTART_PROGRAM = '''\
"""Quickstart program: samples circuits in parallel and saves their quasi-distributions."""

from qiskit import QuantumCircuit

from qiskit.primitives import Sampler
from quantum_serverless import distribute_task, get, get_arguments, save_result


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
'''

#: The tutorial program: expectation values of random circuits in parallel with the V1
#: Estimator, the shared observable put into the object store once.
TUTORIAL_PROGRAM = '''\
"""Tutorial: expectation values of random circuits, computed in parallel."""

from qiskit import QuantumCircuit
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import SparsePauliOp

from qiskit.primitives import Estimator
from quantum_serverless import QuantumServerless, distribute_task, get, put


# 1. a function that runs remotely
@distribute_task()
def expectation_value(circuit: QuantumCircuit, observable: SparsePauliOp):
    """The expectation value of the observable in the state the circuit prepares."""
    return Estimator().run([circuit], [observable]).result().values


# 2. the serverless object: where remote functions run (here, this machine)
serverless = QuantumServerless()

circuits = [random_circuit(2, 2, seed=seed) for seed in range(4)]

# 3. a context in which remote functions run in parallel
with serverless.context():
    # 4. the observable is the same for every circuit: store it once, pass its reference
    observable_ref = put(SparsePauliOp(["ZZ", "XX"], coeffs=[1.0, 0.5]))

    # 5. one circuit...
    single_result = get(expectation_value(circuits[0], observable_ref))

    # 5.1 ...or all of them in parallel
    parallel_result = get([expectation_value(circuit, observable_ref) for circuit in circuits])

print("Single execution:", single_result.tolist())
print("N parallel executions:", [values.tolist() for values in parallel_result])
'''

#: The import lines that change, and what they become.
IMPORTS = {
    "from quantum_serverless import ": "from qsrv.compat.quantum_serverless import ",
    "from qiskit.primitives import ": "from qsrv.compat.qiskit_primitives import ",
}


def with_qsrv_imports(source: str) -> str:
    """`source` with its classic import lines pointed at qsrv, and nothing else changed."""
    lines = source.splitlines(keepends=True)
    for i, line in enumerate(lines):
        for old, new in IMPORTS.items():
            if line.startswith(old):
                lines[i] = new + line[len(old):]
    return "".join(lines)
