"""The classic Quantum Serverless quickstart, notebook side: run the quickstart program as a job.

    python examples/quantum_serverless/run_program.py

``QuantumServerless()`` is the local provider: ``run_program`` starts the embedded local
cluster with its gateway (state under $QSRV_DATA_DIR or ~/.qsrv) and runs the program
(source_files/program.py) as a job on it. Written against the classic API; only the import
line names qsrv.
"""

import json
from pathlib import Path

from qiskit.circuit.random import random_circuit

from qsrv.compat.quantum_serverless import Program, QuantumServerless

serverless = QuantumServerless()

program = Program(
    title="Quickstart",
    entrypoint="program.py",
    working_dir=str(Path(__file__).resolve().parent / "source_files"),
    description="Samples circuits in parallel with distribute_task",
)

circuits = []
for seed in (0, 7, 8):
    circuit = random_circuit(3, 2, seed=seed)
    circuit.measure_all()
    circuits.append(circuit)

job = serverless.run_program(program=program, arguments={"circuits": circuits})
print(f"job {job.job_id}: {job.status()}")

result = job.result()  # waits until the job has ended
print(f"job {job.job_id}: {job.status()}")
print("RESULT " + json.dumps({"quasi_dists": [{str(outcome): probability
                                               for outcome, probability in dist.items()}
                                              for dist in result["quasi_dists"]]}))
