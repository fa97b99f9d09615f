"""`qsrv user passwd` sets a password that the gateway then checks (stored as a hash only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qsrv.gateway._passwords import verify_password
from qsrv.gateway._store import Store
from qsrv.gateway._users import db_path


def _qsrv(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qsrv", *args], input=stdin, text=True,
                          capture_output=True, timeout=60)


def test_passwd_sets_a_hashed_password(tmp_path: Path) -> None:
    data = str(tmp_path)
    assert _qsrv("user", "add", "carol", "--data-dir", data).returncode == 0
    out = _qsrv("user", "passwd", "carol", "--data-dir", data, "--password-stdin",
                stdin="correct horse battery\n")
    assert out.returncode == 0, out.stderr
    store = Store.open(db_path(data))
    try:
        found = store.password_hash("carol")
    finally:
        store.close()
    assert found is not None
    _, stored = found
    assert "correct horse" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("wrong", stored)
    missing = _qsrv("user", "passwd", "nobody", "--data-dir", data, "--password-stdin",
                    stdin="whatever password\n")
    assert missing.returncode == 1 and "no user" in missing.stderr
