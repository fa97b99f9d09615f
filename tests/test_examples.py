"""Every example runs, as a user would run it, and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    env = dict(os.environ)
    env.pop("QSRV_ADDRESS", None)
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                         text=True, timeout=120, env=env, cwd=EXAMPLES)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_quickstart() -> None:
    stdout = run_example("quickstart.py")
    assert "counts of run 0: {'00':" in stdout
    # only 00 and 11 are ever sampled, so every <ZZ> is exactly 1
    assert f"<ZZ> per run: {[1.0] * 8}" in stdout
    assert "awaited: [1.0, 1.0]" in stdout
