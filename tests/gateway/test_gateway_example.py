"""examples/serverless_flow runs end to end on a real cluster (scheduler, worker, gateway)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serverless_flow" / "run_flow.py"


def test_serverless_flow_example() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                          timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "uploaded sample-random-circuits version 1" in out
    assert ": RUNNING" in out or ": QUEUED" in out
    assert ": SUCCEEDED" in out
    assert "submitted 6 random 5-qubit circuits of depth 8" in out  # the job's own logs
    result = json.loads(out.split("RESULT ", 1)[1])
    assert result["num_qubits"] == 5 and len(result["counts"]) == 6
    for counts in result["counts"]:
        assert sum(counts.values()) == 2000
        assert all(len(bits) == 5 and set(bits) <= {"0", "1"} for bits in counts)
    # Different seeds give different circuits.
    assert len({json.dumps(c, sort_keys=True) for c in result["counts"]}) == 6
