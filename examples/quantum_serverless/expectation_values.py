"""Tutorial: expectation values of random circuits, computed in parallel."""

from qiskit import QuantumCircuit
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import SparsePauliOp

from qsrv.compat.qiskit_primitives import Estimator
from qsrv.compat.quantum_serverless import QuantumServerless, distribute_task, get, put


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
