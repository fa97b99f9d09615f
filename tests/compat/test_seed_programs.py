"""The seed-style Quantum Serverless programs run on qsrv with only their import lines changed.

The originals (tests/compat/seed_programs.py) import the classic API from
``quantum_serverless`` and the V1 primitives from ``qiskit.primitives``, which qiskit 2
removed. Each test takes the original text, points its import lines at
``qsrv.compat.quantum_serverless`` and ``qsrv.compat.qiskit_primitives`` and changes nothing
else, and runs it as the seed ran it: the quickstart program as a job (run from a notebook
through a provider that logs in with a user name and password), the tutorial as a script on
this machine's local cluster.
"""

from __future__ import annotations

import ast
import difflib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import SparsePauliOp, Statevector

from qsrv.compat.quantum_serverless import GatewayProvider, Program, QuantumServerless
from tests._support.deployment import ALICE_PASSWORD, Deployment
from tests.compat.seed_programs import (
    IMPORTS,
    QUICKSTART_PROGRAM,
    TUTORIAL_PROGRAM,
    with_qsrv_imports,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quantum_serverless"
SEEDS = {"source_files/program.py": QUICKSTART_PROGRAM,
         "expectation_values.py": TUTORIAL_PROGRAM}


def changed_lines(original: str, converted: str) -> list[str]:
    return [line for line in difflib.ndiff(original.splitlines(), converted.splitlines())
            if line.startswith(("- ", "+ "))]


@pytest.mark.parametrize("example", sorted(SEEDS))
def test_the_examples_are_the_seeds_with_only_import_lines_changed(example: str) -> None:
    original = SEEDS[example]
    converted = with_qsrv_imports(original)
    assert (EXAMPLES / example).read_text() == converted
    changed = changed_lines(original, converted)
    assert len(changed) == 4, changed  # two import lines out, two in
    for line in changed:
        assert line[2:].startswith((*IMPORTS, *IMPORTS.values())), line
    # the originals name the V1 primitives that qiskit 2 removed
    assert "from qiskit.primitives import " in original
    with pytest.raises(ImportError):
        exec("from qiskit.primitives import Sampler, Estimator", {})


def exact_distribution(circuit: Any) -> dict[int, float]:
    state = Statevector(circuit.remove_final_measurements(inplace=False))
    return {int(bits, 2): p for bits, p in state.probabilities_dict().items()}


def test_quickstart_program_runs_as_a_job(deployment: Deployment, tmp_path: Path) -> None:
    (tmp_path / "program.py").write_text(with_qsrv_imports(QUICKSTART_PROGRAM))
    serverless = QuantumServerless(GatewayProvider(
        username="alice", password=ALICE_PASSWORD, host=deployment.url))
    program = Program(title="Quickstart", entrypoint="program.py", working_dir=str(tmp_path))
    circuits = []
    for seed in (0, 7, 8):
        circuit = random_circuit(3, 2, seed=seed)
        circuit.measure_all()
        circuits.append(circuit)

    job = serverless.run_program(program=program, arguments={"circuits": circuits})
    result = job.result()

    assert job.status() == "SUCCEEDED", job.logs()
    quasi_dists = result["quasi_dists"]
    assert len(quasi_dists) == 3
    for circuit, quasi in zip(circuits, quasi_dists, strict=True):
        expected = exact_distribution(circuit)
        assert set(quasi) == set(expected)  # exact: no sampled outcome missing or extra
        assert quasi == pytest.approx(expected, abs=1e-12)
        assert quasi.shots is None  # exact, as the V1 reference Sampler without shots


def test_tutorial_program_runs_as_a_script(tmp_path: Path) -> None:
    script = tmp_path / "tutorial.py"
    script.write_text(with_qsrv_imports(TUTORIAL_PROGRAM))
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    printed = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    single = ast.literal_eval(printed["Single execution"])
    parallel = ast.literal_eval(printed["N parallel executions"])

    observable = SparsePauliOp(["ZZ", "XX"], coeffs=[1.0, 0.5])
    expected = [Statevector(random_circuit(2, 2, seed=seed)).expectation_value(observable).real
                for seed in range(4)]
    assert single == pytest.approx(expected[:1], abs=1e-9)
    assert [values[0] for values in parallel] == pytest.approx(expected, abs=1e-9)
    assert all(len(values) == 1 for values in parallel)
