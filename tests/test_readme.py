"""Every ```python block of the README runs as pasted, in a fresh interpreter, as a new user
would paste it into a script (no cluster address inherited, its own working directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QSRV_") or k in ("QSRV_PURE_PYTHON", "QSRV_REQUIRE_NATIVE")}
    env["HOME"] = str(tmp_path)  # nothing of the user's ~/.qsrv
    out = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"block {index}:\n{BLOCKS[index]}\n{out.stderr}"
    assert out.stdout.strip(), f"block {index} printed nothing"
