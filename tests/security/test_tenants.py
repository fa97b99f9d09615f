"""A job of user A attacks user B and the gateway, with real processes.

Bob runs a job that stays running (it holds a gateway token and a cluster credential in its
environment) and keeps a file for his program; alice's job then tries to read the gateway's
database, bob's files, his running job's arguments and the environments of other processes;
to write bob's job result, post an event on his job with a stolen token and plant a token for
him in the database; and to connect to the scheduler as a worker with whatever it holds.

Under a sandbox every attempt fails. Without one (``--job-sandbox none``, the same attack on
the same deployment) every attempt succeeds: the test proves it could fail. Only registering
as a worker with the job's own credential fails there too: that is the credential's scope,
which holds whatever the sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qsrv.gateway import Client, Program
from tests._support import GATE_CLIENT, Gate, wait_for
from tests.security._attack import ATTACK
from tests.security.conftest import (
    Deployment,
    deployment,
    program_dir,
    request,
    require,
    require_bwrap,
)

SECRET = "bob-secret-" + secrets.token_hex(8)


def call(method: str, url: str, headers: dict[str, str] | None = None,
         **kwargs: Any) -> tuple[int, Any]:
    return asyncio.run(request(method, url, headers, **kwargs))


def start_bob(dep: Deployment, root: Path, gate: Gate, bob: str = "bob") -> str:
    """Bob's program and file, and a job of his that runs until the gate is released."""
    client = Client(dep.url, dep.tokens[bob])
    source = GATE_CLIENT + f"gate({gate.port})\n"
    client.upload(Program("bobprog", "main.py", program_dir(root / "bob", source)))
    form = aiohttp.FormData()
    form.add_field("file", f"{SECRET}\n".encode(), filename="secret.txt")
    status, body = call("POST", f"{dep.url}/api/v1/files/upload?function=bobprog",
                        dep.headers(bob), data=form)
    assert status == 200, body
    status, job = call("POST", f"{dep.url}/v1/jobs", dep.headers(bob),
                       json={"program": "bobprog", "arguments_json": {"secret": SECRET}})
    assert status == 201, job
    gate.accept()  # bob's job runs, and waits
    return str(job["job_id"])


def attack(dep: Deployment, root: Path, bob_job: str, planted: str,
           alice: str = "alice", bob: str = "bob") -> dict[str, str]:
    client = Client(dep.url, dep.tokens[alice])
    client.upload(Program("attack", "main.py", program_dir(root / "alice", ATTACK)))
    arguments = {"data_dir": str(dep.data_dir), "alice_id": dep.ids[alice],
                 "bob_id": dep.ids[bob], "bob_title": "bobprog", "bob_secret": SECRET,
                 "bob_job": bob_job, "planted": planted, "gateway": dep.url,
                 "cluster": dep.cluster}
    status, job = call("POST", f"{dep.url}/v1/jobs", dep.headers(alice),
                       json={"program": "attack", "arguments_json": arguments})
    assert status == 201, job
    _, ended = call("GET", f"{dep.url}/v1/jobs/{job['job_id']}/wait?timeout=60",
                         dep.headers(alice))
    assert ended["status"] == "SUCCEEDED", ended
    status, body = call("GET", f"{dep.url}/api/v1/jobs/{job['job_id']}/result",
                        dep.headers(alice))
    report: dict[str, str] = json.loads(body["result"])
    print(json.dumps(report, indent=1))  # shown when a test fails
    return report


def finish_bob(dep: Deployment, gate: Gate, bob_job: str, bob: str = "bob") -> dict[str, Any]:
    for conn in gate.conns:
        conn.sendall(b"x")  # released: the job ends by itself
    _, ended = call("GET", f"{dep.url}/v1/jobs/{bob_job}/wait?timeout=60",
                         dep.headers(bob))
    assert ended["status"] == "SUCCEEDED", ended
    return dict(ended)


def me(dep: Deployment, token: str) -> tuple[int, Any]:
    return call("GET", f"{dep.url}/v1/me", {"Authorization": f"Bearer {token}"})


def denied(report: dict[str, str], *names: str) -> None:
    wrong = {n: report[n] for n in names if not report[n].startswith("denied")}
    assert not wrong, f"these attempts succeeded: {wrong}"


def succeeded(report: dict[str, str], *names: str) -> None:
    wrong = {n: report[n] for n in names if not report[n].startswith("ok")}
    assert not wrong, f"these attempts failed without a sandbox: {wrong}"


ON_DISK = ("read_db", "list_data_dir", "db_secrets", "insert_token", "read_bob_files",
           "read_bob_job", "write_bob_job", "scan_environ", "post_bob_event")


def test_bwrap_keeps_tenants_apart(tmp_path: Path, gate: Gate) -> None:
    require_bwrap()
    planted = "qsrv_" + secrets.token_urlsafe(32)
    with deployment(tmp_path, "bwrap") as dep:
        bob_job = start_bob(dep, tmp_path, gate)
        report = attack(dep, tmp_path, bob_job, planted)
        bob_end = finish_bob(dep, gate, bob_job)
        denied(report, *ON_DISK, "worker_own_credential", "worker_stolen_token")
        # what the job holds is a valid credential: as a driver, nothing else
        assert report["driver_own_credential"].startswith("ok"), report
        assert me(dep, planted)[0] == 401
        assert not bob_end["has_result"]
        _, events = call("GET", f"{dep.url}/api/v1/jobs/{bob_job}/events",
                              dep.headers("bob"))
        assert "forged" not in json.dumps(events), events


def test_without_a_sandbox_the_same_attack_succeeds(tmp_path: Path, gate: Gate) -> None:
    """The attack above is real: with ``--job-sandbox none`` each attempt gets through."""
    planted = "qsrv_" + secrets.token_urlsafe(32)
    with deployment(tmp_path, "none") as dep:
        bob_job = start_bob(dep, tmp_path, gate)
        report = attack(dep, tmp_path, bob_job, planted)
        bob_end = finish_bob(dep, gate, bob_job)
        succeeded(report, *ON_DISK, "worker_stolen_token", "driver_own_credential")
        denied(report, "worker_own_credential")  # the credential's scope holds regardless
        assert me(dep, planted) == (200, {"name": "bob"})  # account takeover
        assert bob_end["has_result"]  # forged


@pytest.fixture
def os_accounts() -> Iterator[tuple[str, str]]:
    """Two OS accounts (removed afterwards), named like two gateway users."""
    require(os.geteuid() == 0, "the users sandbox needs root (to create OS accounts)")
    require(shutil.which("useradd") is not None, "useradd is needed to create OS accounts")
    names = (f"qsa{secrets.token_hex(3)}", f"qsb{secrets.token_hex(3)}")
    for name in names:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       check=True, capture_output=True)
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["userdel", name], capture_output=True)


def _system_python() -> str:
    """An interpreter other accounts may run (the gateway's may live in root's home)."""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(path):
            return path
    return ""


def test_users_sandbox_keeps_tenants_apart(os_accounts: tuple[str, str], gate: Gate) -> None:
    alice, bob = os_accounts
    python = _system_python()
    require(bool(python), "no interpreter readable by other accounts (/usr/bin/python3)")
    root = Path(tempfile.mkdtemp(prefix="qsrv-users-"))
    os.chmod(root, 0o711)  # the accounts reach the data directory (its own mode: 0711)
    planted = "qsrv_" + secrets.token_urlsafe(32)
    try:
        with deployment(root, "users", (alice, bob), extra=("--job-python", python)) as dep:
            assert os.stat(dep.data_dir).st_mode & 0o777 == 0o711
            bob_job = start_bob(dep, root, gate, bob)
            running_as = wait_for(lambda: _job_uid(bob_job), what="bob's job process")
            assert running_as == pwd.getpwnam(bob).pw_uid
            report = attack(dep, root, bob_job, planted, alice, bob)
            bob_end = finish_bob(dep, gate, bob_job, bob)
            denied(report, *ON_DISK)
            assert me(dep, planted)[0] == 401
            assert not bob_end["has_result"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _job_uid(job_id: str) -> int | None:
    import psutil

    for proc in psutil.process_iter():
        try:
            if proc.environ().get("QSRV_JOB_ID") == job_id:
                return int(proc.uids().real)
        except (psutil.Error, OSError):
            continue
    return None
