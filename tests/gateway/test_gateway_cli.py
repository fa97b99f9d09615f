"""The gateway's CLI: ``qsrv user``, ``qsrv programs``, ``qsrv jobs``, ``qsrv gateway``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qsrv.cli import main
from qsrv.gateway import Client, JobStatus, Program, start_gateway_process
from tests._support import GATE_CLIENT, Gate, stop_process
from tests._support.gateway import ThreadedGateway


def test_user_add_prints_the_token_last(data_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "qsrv", "user", "add", "dave", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    token = out.strip().splitlines()[-1]
    assert token.startswith("qsrv_")
    proc, url = start_gateway_process(None, None, data_dir)
    try:
        assert Client(url, token).jobs().total == 0
    finally:
        stop_process(proc, 30)
    again = subprocess.run(
        [sys.executable, "-m", "qsrv", "user", "add", "dave", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 1 and "already exists" in again.stderr


def test_user_list(data_dir: Path, alice_token: str, bob_token: str,
                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["user", "list", "--data-dir", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("quotas")  # the gateway's, once it has run
    assert [line.split()[0] for line in lines[1:-1]] == ["alice", "bob"]


def test_programs_and_jobs_commands(gateway: ThreadedGateway, alice_token: str,
                                    make_program: Callable[..., Program], gate: Gate,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QSRV_GATEWAY", gateway.url)
    monkeypatch.setenv("QSRV_GATEWAY_TOKEN", alice_token)
    program = make_program("cli", GATE_CLIENT + f"""
from qsrv.gateway import get_arguments, save_result
print("cli job says hi")
gate({gate.port})
save_result({{"echo": get_arguments()}})
""")
    assert main(["programs", "upload", "cli", "--entrypoint", "main.py",
                 "--working-dir", str(program.working_dir), "--env", "A=1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"title": "cli", "version": 1}
    assert main(["programs", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split()[:3] == ["TITLE", "VERSION", "ENTRYPOINT"]
    assert rows[1].split()[:3] == ["cli", "1", "main.py"]

    assert main(["jobs", "run", "cli", "--arguments", '{"k": 2}']) == 0
    job_id = capsys.readouterr().out.strip()
    conn = gate.accept()
    assert conn.recv(100) == b"started\n"
    assert main(["jobs", "status", job_id]) == 0
    assert capsys.readouterr().out.strip() == "RUNNING"
    assert main(["jobs", "list"]) == 0
    out = capsys.readouterr()
    assert job_id in out.out and "1 of 1 jobs" in out.err
    conn.sendall(b"g")
    assert main(["jobs", "result", job_id, "--timeout", "30"]) == 0
    assert json.loads(capsys.readouterr().out) == {"echo": {"k": 2}}
    assert main(["jobs", "logs", job_id]) == 0
    assert "cli job says hi" in capsys.readouterr().out
    assert main(["jobs", "list", "--status", "FAILED"]) == 0
    assert job_id not in capsys.readouterr().out


def test_jobs_stop_and_failure_exit_codes(gateway: ThreadedGateway, alice: Client,
                                          alice_token: str,
                                          make_program: Callable[..., Program], gate: Gate,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    opts = ["--gateway", gateway.url, "--token", alice_token]
    job = alice.run(make_program("stopme", GATE_CLIENT + f"gate({gate.port})\n"))
    gate.accept()
    assert main(["jobs", "stop", job.job_id, *opts]) == 0
    assert capsys.readouterr().out.strip() == "STOPPED"
    assert job.status() is JobStatus.STOPPED
    assert main(["jobs", "result", job.job_id, *opts]) == 1
    assert "STOPPED" in capsys.readouterr().err
    failing = alice.run(make_program("fails", "raise KeyError('nope')"))
    failing.wait(timeout=30)
    assert main(["jobs", "result", failing.job_id, *opts]) == 1
    assert "KeyError: 'nope'" in capsys.readouterr().err
    assert main(["jobs", "status", "no-such-job", *opts]) == 1
    assert "no job" in capsys.readouterr().err
    assert main(["jobs", "list", "--gateway", gateway.url, "--token", "qsrv_bad"]) == 1
    assert "unknown token" in capsys.readouterr().err


def test_jobs_without_a_gateway_configured(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jobs", "list"]) == 1
    assert "QSRV_GATEWAY" in capsys.readouterr().err
