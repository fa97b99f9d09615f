"""The classic flows in examples/quantum_serverless run as users run them, and name qsrv on their
import lines only.

``expectation_values.py`` and ``source_files/program.py`` are the seed programs with their
import lines changed; tests/compat/test_seed_programs.py checks that, and runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import Statevector

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
def test_only_import_lines_name_qsrv(script: str) -> None:
    """Pointing the qsrv imports back at ``quantum_serverless`` (and ``qiskit.primitives``)
    gives back classic code: no other line mentions qsrv."""
    source = (EXAMPLES / script).read_text()
    code = source.split('"""', 2)[2]  # past the module docstring
    statements = code.replace("(\n", "(").split("\n")
    naming = [line for line in statements if "qsrv" in line]
    assert naming
    for line in naming:
        assert line.startswith(("from qsrv.compat.quantum_serverless import ",
                                "from qsrv.compat.qiskit_primitives import ")), line


def test_quickstart_program_runs_on_the_local_provider(tmp_path: Path) -> None:
    out = run("run_program.py", tmp_path)
    assert ": QUEUED" in out or ": RUNNING" in out
    assert ": SUCCEEDED" in out
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert len(result["quasi_dists"]) == 3
    for seed, quasi in zip((0, 7, 8), result["quasi_dists"], strict=True):
        circuit = random_circuit(3, 2, seed=seed)
        expected = {str(int(bits, 2)): p
                    for bits, p in Statevector(circuit).probabilities_dict().items()}
        assert quasi == pytest.approx(expected, abs=1e-12)
