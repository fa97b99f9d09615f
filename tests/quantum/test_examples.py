"""Every example in examples/quantum runs as a user would run it and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quantum"


def run_example(name: str) -> str:
    env = dict(os.environ)
    env.pop("QSRV_ADDRESS", None)
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                         text=True, timeout=120, env=env, cwd=EXAMPLES)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_sample_random_circuits() -> None:
    out = run_example("sample_random_circuits.py")
    assert "sampled 12 circuits; shots per circuit: [500]" in out


def test_shared_observable() -> None:
    out = run_example("shared_observable.py")
    assert "<sum ZZ>: [3.0, 1.5," in out
    assert "matches exact: True" in out


def test_vqe() -> None:
    out = run_example("vqe.py")
    assert "exact ground -1.4142" in out
    assert "converged: True" in out


def test_drop_in_primitives() -> None:
    out = run_example("drop_in_primitives.py")
    assert "sampler identical to Aer's: True" in out
    assert "estimator identical to Aer's: True" in out
