"""The classic Quantum Serverless flow, program side: upload a program, run it, read its job.

    python examples/quantum_serverless/run_program.py

``QuantumServerless()`` is the local provider: ``run_program`` starts the embedded local
cluster with its gateway (state under $QSRV_DATA_DIR or ~/.qsrv) and runs the program as a job
on it. Written against the classic API; only the import line names qsrv.
"""

import json
from pathlib import Path

from qsrv.compat.quantum_serverless import Program, QuantumServerless

serverless = QuantumServerless()

program = Program(
    title="distributed-sampling",
    entrypoint="program.py",
    working_dir=str(Path(__file__).resolve().parent / "source_files"),
    description="Samples random circuits in parallel with distribute_task",
)

job = serverless.run_program(program, arguments={"num_circuits": 4, "shots": 500, "seed": 11})
print(f"job {job.job_id}: {job.status()}")

result = job.result()  # waits until the job has ended
print(f"job {job.job_id}: {job.status()}")
print("---- logs ----")
print(job.logs().rstrip())
print("RESULT " + json.dumps(result))
