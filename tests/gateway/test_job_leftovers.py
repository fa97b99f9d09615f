"""Nothing of a job outlives it: a process the job started in a session of its own (``setsid``),
after a double fork, is gone once the job is stored ended, with every sandbox that can see to
it: ``none`` and ``users`` through the job's first process (``_job_init``, a child subreaper on
Linux), ``bwrap`` through its PID namespace. Real gateways, real job processes; the leftover
process is looked for among the host's processes by a marker in its command line."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from qsrv.gateway import Client, JobStatus, Program, add_user
from tests._support import GATE_CLIENT, Gate, wait_for
from tests._support.sandboxes import require


def _leftover_program(port: int, marker: str, prelude: str = "") -> str:
    """A job that leaves a process in a new session (double fork) holding its output, and
    waits at the gate; released, it exits. Both run ``prelude`` first."""
    child = prelude + GATE_CLIENT + f"gate({port}, b'escaped')  # {marker}\n"
    return prelude + GATE_CLIENT + f"""
import os, subprocess, sys
if os.fork() == 0:  # the middle process: a new session, a grandchild, and gone
    os.setsid()
    subprocess.Popen([sys.executable, "-c", {child!r}])
    os._exit(0)
os.wait()
gate({port}, b"main")
"""


def _alive_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if marker in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _run_and_check(alice: Client, program: Program, gate: Gate, marker: str,
                   uid: int | None = None) -> None:
    job = alice.run(program)
    conns = {}
    for _ in range(2):
        conn = gate.accept()
        conns[conn.recv(100).strip()] = conn
    [leftover] = _alive_with(marker)  # it runs, in a session of its own
    if uid is not None:
        assert leftover.uids().real == uid
    conns[b"main"].sendall(b"x")  # the job's process exits
    assert job.wait(timeout=60) is JobStatus.SUCCEEDED
    assert _alive_with(marker) == []  # already gone when the job is stored ended
    conns[b"escaped"].settimeout(30)
    assert conns[b"escaped"].recv(1) == b""


def _program(root: Path, source: str) -> Program:
    folder = root / f"prog-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(source)
    return Program("leftover", "main.py", folder)


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_a_process_that_left_the_job_dies_with_it(
        sandbox: str, make_gateway: Callable[..., Any], alice_token: str,
        tmp_path: Path) -> None:
    if sandbox == "bwrap":
        require(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    alice = Client(make_gateway(job_sandbox=sandbox).url, alice_token)
    marker = f"qsrv-leftover-{secrets.token_hex(8)}"
    with Gate(timeout=60) as gate:
        _run_and_check(alice, _program(tmp_path, _leftover_program(gate.port, marker)), gate,
                       marker)


@pytest.fixture
def os_account() -> Iterator[str]:
    """An OS account named like a gateway user (removed afterwards)."""
    require(os.geteuid() == 0, "the users sandbox needs root (to create OS accounts)")
    require(shutil.which("useradd") is not None, "useradd is needed to create OS accounts")
    name = f"qsl{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_a_process_that_left_the_job_dies_with_it_under_os_accounts(
        os_account: str, make_gateway: Callable[..., Any]) -> None:
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                   if os.path.exists(p)), "")
    require(bool(python), "no interpreter readable by other accounts (/usr/bin/python3)")
    root = Path(tempfile.mkdtemp(prefix="qsrv-leftover-"))
    os.chmod(root, 0o711)  # the account reaches its job's directory
    try:
        token = add_user(root / "data", os_account)[1]
        gateway = make_gateway(job_sandbox="users", job_python=python,
                               data_dir=root / "data")
        alice = Client(gateway.url, token)
        marker = f"qsrv-leftover-{secrets.token_hex(8)}"
        programs = root / "programs"
        programs.mkdir()
        with Gate(timeout=60) as gate:
            _run_and_check(alice, _program(programs, _leftover_program(gate.port, marker)),
                           gate, marker, pwd.getpwnam(os_account).pw_uid)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_without_the_job_init_the_leftover_survives(
        make_gateway: Callable[..., Any], alice_token: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: with the job started as before (killing its process group
    only), the process in its own session outlives the job."""
    import qsrv.gateway._runner as runner_module

    monkeypatch.setattr(runner_module, "_reaps_leftovers", lambda sandbox: False)
    monkeypatch.setattr(runner_module, "_GROUP_EXIT_TIMEOUT_S", 0.5)
    alice = Client(make_gateway(job_sandbox="none").url, alice_token)
    marker = f"qsrv-leftover-{secrets.token_hex(8)}"
    with Gate(timeout=60) as gate:
        job = alice.run(_program(tmp_path, _leftover_program(gate.port, marker)))
        conns = {}
        for _ in range(2):
            conn = gate.accept()
            conns[conn.recv(100).strip()] = conn
        conns[b"main"].sendall(b"x")
        assert job.wait(timeout=60) is JobStatus.SUCCEEDED
        [leftover] = _alive_with(marker)
        leftover.kill()
        wait_for(lambda: not _alive_with(marker), what="the leftover killed")


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_stopping_a_job_kills_what_left_it_even_when_it_ignores_sigterm(
        sandbox: str, make_gateway: Callable[..., Any], alice_token: str,
        tmp_path: Path) -> None:
    if sandbox == "bwrap":
        require(shutil.which("bwrap") is not None, "bubblewrap is not installed")
    alice = Client(make_gateway(job_sandbox=sandbox, stop_grace_s=0.3).url, alice_token)
    marker = f"qsrv-leftover-{secrets.token_hex(8)}"
    stubborn = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    with Gate(timeout=60) as gate:
        job = alice.run(_program(tmp_path, _leftover_program(gate.port, marker, stubborn)))
        conns = {}
        for _ in range(2):
            conn = gate.accept()
            conns[conn.recv(100).strip()] = conn
        assert len(_alive_with(marker)) == 1
        assert job.stop(timeout=60) is JobStatus.STOPPED
        assert _alive_with(marker) == []
        if sandbox == "none":  # (bubblewrap itself ends on SIGTERM, taking the job along)
            assert alice.job(job.job_id).info["exit_code"] == -9
