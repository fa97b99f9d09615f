"""examples/quantum_service runs as a user runs it: each script alone, starting its own local
cluster and gateway (no QSRV_* variables inherited)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "quantum_service"


def run(name: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QSRV_") or k in ("QSRV_PURE_PYTHON", "QSRV_REQUIRE_NATIVE")}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_variational_loop_on_an_open_batch() -> None:
    out = run("variational_loop.py")
    assert "batch DONE after 13 jobs" in out
    assert len(re.findall(r"^round \d+: theta=", out, flags=re.M)) == 12
    found = re.search(r"^theta=([\d.]+) .* P\(1\)=([\d.]+)$", out, flags=re.M)
    assert found is not None, out
    assert abs(float(found[1]) - math.pi) < 0.6 and float(found[2]) >= 0.9


def test_a_session_shared_by_two_scripts() -> None:
    out = run("shared_session.py")
    first = re.search(r"first script: session (\S+) \(created: True\)", out)
    second = re.search(r"second script: session (\S+) \(created: False\)", out)
    assert first and second and first[1] == second[1], out
    assert "second script: detached; the session is running" in out
    assert "first script: after the second script the session is running" in out
    assert "first script: 2 jobs ran on it" in out
    assert "first script: at the end it is stopped (terminated)" in out
