"""``import qsrv`` stays light: a driver, a worker agent or a CLI command that never sees a
state vector does not load numpy (half the import time), nor the gateway's web stack."""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_qsrv_does_not_import_numpy() -> None:
    loaded = _loaded_after("import qsrv")
    assert "qsrv" in loaded and "qsrv.client" in loaded
    assert not {m for m in loaded if m == "numpy" or m.startswith("numpy.")}
    assert "aiohttp" not in loaded and "qiskit" not in loaded


def test_the_codec_loads_numpy_on_first_use() -> None:
    loaded = _loaded_after("import qsrv.codec as c\nimport numpy as np\n"
                           "assert c.statevec.is_statevector(np.zeros(4, complex))\n"
                           "assert c.byte_view(b'ab').nbytes == 2")
    assert "qsrv.codec._statevec" in loaded


def test_a_worker_command_loads_neither_numpy_nor_the_gateway() -> None:
    loaded = _loaded_after("import qsrv.cli\n"
                           "qsrv.cli.build_parser('worker').parse_args(['worker', '--cpus', '1'])")
    assert "qsrv.cli.worker" in loaded and "qsrv.worker" in loaded
    assert "numpy" not in loaded and "aiohttp" not in loaded and "qsrv.gateway" not in loaded
