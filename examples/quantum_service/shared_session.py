"""A session shared by two scripts through a deduplication id.

    python examples/quantum_service/shared_session.py

This script opens a session on a platform with ``deduplication_id="shared-demo"`` and runs a
job on it; then it runs a second script, ``join_session.py``, which asks for a session with the
same platform and deduplication id: it gets this one (not a new one), runs its own job on the
same reservation and leaves it (``with`` only detaches from a session it joined). The session
is still running afterwards; this script, which created it, terminates it when its ``with``
ends.

With QSRV_GATEWAY and QSRV_GATEWAY_TOKEN set, it uses that gateway; otherwise it starts a
local cluster with its gateway (``qsrv.init(gateway=True)``) and passes its address and token
to the second script in the same variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import qsrv
from qsrv.gateway import GatewayClient
from qsrv.quantum import engines

PLATFORM = "aer.statevector.cpu"
DEDUPLICATION_ID = "shared-demo"
BELL = ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\n'
        'cx q[0],q[1];\nmeasure q -> c;\n')


def main() -> None:
    if not os.environ.get("QSRV_GATEWAY"):
        qsrv.init(gateway=True, data_dir=tempfile.mkdtemp(prefix="qsrv-shared-"))
        engines.platforms()  # returns once the local worker has probed its engines
    client = GatewayClient()
    with client.session(PLATFORM, deduplication_id=DEDUPLICATION_ID,
                        max_idle_duration="10m") as session:
        print(f"first script: session {session.id} (created: {session.created})")
        job = session.run(BELL, shots=500)
        print(f"first script: job {job.id} -> {job.wait().result}")
        second = subprocess.run([sys.executable, str(Path(__file__).with_name(
            "join_session.py"))], env=dict(os.environ), capture_output=True, text=True,
            timeout=300)
        sys.stdout.write(second.stdout)
        if second.returncode:
            sys.stderr.write(second.stderr)
            raise SystemExit(f"the second script failed ({second.returncode})")
        print(f"first script: after the second script the session is "
              f"{session.refresh().status}")
        print(f"first script: {len(session.jobs())} jobs ran on it")
    print(f"first script: at the end it is {session.refresh().status} ({session.reason})")


if __name__ == "__main__":
    main()
