"""The classic Quantum Serverless tutorial: expectation values of random circuits in parallel.

    python examples/quantum_serverless/expectation_values.py

The observable is put into the object store once and every task gets a reference to it; each
task asks for 2 CPUs and 8 GiB of memory. Written against the classic API; only the import
line names qsrv.
"""

import json

from qiskit.circuit.random import random_circuit
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp

from qsrv.compat.quantum_serverless import QuantumServerless, distribute_task, get, put


@distribute_task(target={"cpu": 2, "mem": 8})
def expectation_value(circuit, observable):
    """<observable> in the state ``circuit`` prepares."""
    return float(StatevectorEstimator().run([(circuit, observable)]).result()[0].data.evs)


circuits = [random_circuit(2, 3, seed=seed) for seed in range(4)]

serverless = QuantumServerless()
with serverless.context():
    observable_ref = put(SparsePauliOp(["ZZ", "XX"], coeffs=[1.0, 0.5]))  # stored once
    value_refs = [expectation_value(circuit, observable_ref) for circuit in circuits]
    values = get(value_refs)

print("EXPECTATION VALUES " + json.dumps(values))
