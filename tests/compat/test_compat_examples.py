"""The classic flows in examples/quantum_serverless run as users run them, and differ from the
originals only in their import line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from qiskit.circuit.random import random_circuit
from qiskit.primitives import StatevectorSampler
from qiskit.quantum_info import SparsePauliOp, Statevector

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quantum_serverless"
SCRIPTS = ["expectation_values.py", "run_program.py", "source_files/program.py"]


def run(script: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    env["QSRV_DATA_DIR"] = str(tmp_path / "qsrv-data")  # run_program's local gateway
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                          text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_only_the_import_line_names_qsrv(script: str) -> None:
    """Replacing ``qsrv.compat.quantum_serverless`` by ``quantum_serverless`` in the import gives
    back classic code: no other line mentions qsrv."""
    source = (EXAMPLES / script).read_text()
    code = source.split('"""', 2)[2]  # past the module docstring
    statements = code.replace("(\n", "(").split("\n")
    naming = [line for line in statements if "qsrv" in line]
    assert len(naming) == 1, naming
    assert naming[0].startswith("from qsrv.compat.quantum_serverless import ")


def test_expectation_values_of_random_circuits(tmp_path: Path) -> None:
    out = run("expectation_values.py", tmp_path)
    values = json.loads(out.split("EXPECTATION VALUES ", 1)[1].splitlines()[0])
    observable = SparsePauliOp(["ZZ", "XX"], coeffs=[1.0, 0.5])
    expected = [Statevector(random_circuit(2, 3, seed=seed)).expectation_value(observable).real
                for seed in range(4)]
    assert values == pytest.approx(expected, abs=1e-9)


def test_program_samples_random_circuits_and_saves_the_result(tmp_path: Path) -> None:
    out = run("run_program.py", tmp_path)
    assert ": QUEUED" in out or ": RUNNING" in out
    assert ": SUCCEEDED" in out
    assert "sampled 4 random circuits, 500 shots each" in out  # the job's own logs
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert result["shots"] == 500
    for i, counts in enumerate(result["counts"]):
        circuit = random_circuit(2, 2, seed=11 + i)
        circuit.measure_all()
        sampled = StatevectorSampler(seed=11 + i).run([circuit], shots=500).result()[0]
        assert counts == sampled.data.meas.get_counts()
