"""Edges of a job's life. A job that cannot be started is never left QUEUED out of the queue:
one the store would not mark RUNNING (a full disk) waits and starts once the store recovers; one
that cannot start for another reason is FAILED with why. A stop that comes after the job's
process exited does not turn its success into STOPPED. Real gateways, real SQLite, real job
processes; the store's failure is simulated as SQLite reports a full disk."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

import qsrv.gateway._jobs as jobs_module
import qsrv.gateway._runner as runner_module
import qsrv.gateway._service as service_module
from qsrv.gateway import Client, JobStatus, Program
from qsrv.gateway._models import TERMINAL
from qsrv.gateway._store import Store
from qsrv.gateway._upstream_files import UserFiles
from qsrv.gateway._users import db_path
from tests._support import GATE_CLIENT, Gate, wait_for

HELLO = """
from qsrv.gateway import save_result
save_result("hello")
"""


def test_a_job_the_store_would_not_start_waits_and_starts_later(
        make_gateway: Callable[..., Any], alice_token: str,
        make_program: Callable[..., Program], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = make_gateway(max_jobs_per_user=1)
    alice = Client(gateway.url, alice_token)
    alice.upload(make_program("hello", HELLO))
    original = Store.set_job_status
    refused: list[str] = []
    full = [True]

    def failing(self: Store, job_id: str, status: JobStatus, at: float,
                event: Any = None, **fields: Any) -> Any:
        if status is JobStatus.RUNNING and full[0]:
            refused.append(job_id)
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, job_id, status, at, event, **fields)

    monkeypatch.setattr(Store, "set_job_status", failing)
    first = alice.run("hello")
    second = alice.run("hello")
    assert refused and set(refused) <= {first.job_id, second.job_id}
    assert first.status() is JobStatus.QUEUED and second.status() is JobStatus.QUEUED
    full[0] = False  # the disk has room again
    # both run, in order, one at a time: the failed start left the user's limit as it was
    assert first.wait(timeout=60) is JobStatus.SUCCEEDED
    assert second.wait(timeout=60) is JobStatus.SUCCEEDED
    assert first.result() == "hello" and second.result() == "hello"
    started = [alice.job(job.job_id).info["started_at"] for job in (first, second)]
    assert started == sorted(started)


def test_a_job_that_cannot_start_for_another_reason_fails_with_why(
        make_gateway: Callable[..., Any], alice_token: str,
        make_program: Callable[..., Program], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = make_gateway()
    alice = Client(gateway.url, alice_token)
    alice.upload(make_program("hello", HELLO))
    original = UserFiles.folder
    broken = [True]

    def folder(self: UserFiles, user_id: int, title: str) -> Any:
        if broken[0]:
            raise RuntimeError("the files' folder is broken")
        return original(self, user_id, title)

    monkeypatch.setattr(UserFiles, "folder", folder)
    job = alice.run("hello")
    assert job.wait(timeout=60) is JobStatus.FAILED
    error = alice.job(job.job_id).info["error"]
    assert "could not start this job: the files' folder is broken" in error
    broken[0] = False  # and the next job runs: the failed one does not hold the user's slot
    assert alice.run("hello").wait(timeout=60) is JobStatus.SUCCEEDED


def test_a_stop_after_the_job_exited_keeps_its_success(
        alice: Client, make_program: Callable[..., Program], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The job saves its result, hands its output pipes to a process outside it (this test,
    over a Unix socket) and exits; while the gateway drains that output the user asks to stop
    the job. The stop came too late to end anything: the job SUCCEEDED, with its result."""
    monkeypatch.setattr(runner_module, "_GROUP_EXIT_TIMEOUT_S", 120.0)  # drain until released
    path = str(tmp_path / "fds.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        server.settimeout(60)
        job = alice.run(make_program("late-stop", f"""
import os, socket
from qsrv.gateway import save_result
save_result("done")
s = socket.socket(socket.AF_UNIX)
s.connect({path!r})
socket.send_fds(s, [str(os.getpid()).encode()], [1, 2])
"""))
        conn, _ = server.accept()
        with conn:
            conn.settimeout(60)
            message, fds, _, _ = socket.recv_fds(conn, 100, 2)
        main_pid = int(message)
        try:
            wait_for(lambda: not psutil.pid_exists(main_pid), what="the job's process reaped")
            assert job.status() is JobStatus.RUNNING  # its output is still being read
            assert job.stop(timeout=0.1) is JobStatus.STOPPING
        finally:
            for fd in fds:  # the job's output ends
                os.close(fd)
        assert job.wait(timeout=60) is JobStatus.SUCCEEDED
    assert job.result() == "done"


def test_a_job_ends_when_its_process_exits_and_what_it_left_is_killed(
        alice: Client, make_program: Callable[..., Program]) -> None:
    """The job's process starts a child that keeps the job's output open, and exits: the job
    ends then (it does not wait for the child), and the child, in the job's process group, is
    killed."""
    with Gate(timeout=60) as gate:
        job = alice.run(make_program("leftover", GATE_CLIENT + f"""
import subprocess, sys
from qsrv.gateway import save_result
save_result("done")
subprocess.Popen([sys.executable, "-c", {GATE_CLIENT!r} + "gate({gate.port}, b'child')"])
gate({gate.port}, b"main")
"""))
        conns = {conn.recv(100).strip(): conn for conn in (gate.accept(), gate.accept())}
        conns[b"main"].sendall(b"x")  # the job's process exits; its child stays blocked
        assert job.wait(timeout=60) is JobStatus.SUCCEEDED
        assert conns[b"child"].recv(1) == b""  # the child is gone: its end of the gate closed
    assert job.result() == "done"


def _stored_logs(data_dir: Path, job_id: str) -> bytes:
    store = Store.open(db_path(data_dir))
    try:
        return store.job_logs(job_id)
    finally:
        store.close()


def _failing_ends(monkeypatch: pytest.MonkeyPatch, job_ids: set[str],
                  fails: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Make the store refuse, as SQLite does on a full disk, the writes that end one of
    ``job_ids`` whose fields ``fails``; the list of refused writes' jobs grows as they come."""
    original = Store.set_job_status
    refused: list[str] = []

    def failing(self: Store, job_id: str, status: JobStatus, at: float,
                event: Any = None, **fields: Any) -> Any:
        if job_id in job_ids and status in TERMINAL and fails(fields):
            refused.append(job_id)
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, job_id, status, at, event, **fields)

    monkeypatch.setattr(Store, "set_job_status", failing)
    return refused


def test_a_job_whose_end_cannot_be_stored_keeps_the_output_it_saved(
        make_gateway: Callable[..., Any], alice_token: str, data_dir: Path,
        make_program: Callable[..., Program], monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's end, with its result or its output, does not fit on the disk any more: it is
    stored FAILED saying why and what the job had done, and the output saved while it ran is
    still there (not replaced by nothing)."""
    monkeypatch.setattr(service_module, "_FINAL_WRITE_RETRIES_S", (0.01,))
    alice = Client(make_gateway().url, alice_token)
    with Gate(timeout=60) as gate:
        job = alice.run(make_program("talks", GATE_CLIENT + f"""
from qsrv.gateway import save_result
print("early output", flush=True)
gate({gate.port})
print("late output")
save_result("done")
"""))
        conn = gate.accept()
        wait_for(lambda: b"early output" in _stored_logs(data_dir, job.job_id),
                 what="the running job's output saved")
        refused = _failing_ends(monkeypatch, {job.job_id},
                                lambda f: f.get("result") is not None or bool(f.get("logs")))
        conn.sendall(b"x")
        assert job.wait(timeout=60) is JobStatus.FAILED
    assert "early output" in job.logs()
    assert len(refused) == 3  # the end twice, then FAILED with its output
    info = alice.job(job.job_id).info
    assert "could not store this job's outcome (database or disk is full)" in info["error"]
    assert "it had succeeded" in info["error"]
    assert "output since the last save were lost" in info["error"]


def test_a_job_whose_end_is_not_stored_yet_still_counts_as_running(
        make_gateway: Callable[..., Any], alice_token: str,
        make_program: Callable[..., Program], monkeypatch: pytest.MonkeyPatch) -> None:
    """While the store refuses every write ending the job, it shows RUNNING, and it holds its
    user's only running slot: the user's next job waits QUEUED. Once the disk has room, the
    job is stored FAILED and the next one runs."""
    monkeypatch.setattr(service_module, "_FINAL_WRITE_RETRIES_S", (0.01,))
    monkeypatch.setattr(jobs_module, "_UNSAVED_RETRY_S", 0.05)
    gateway = make_gateway(max_jobs_per_user=1)
    alice = Client(gateway.url, alice_token)
    alice.upload(make_program("hello", HELLO))
    with Gate(timeout=60) as gate:
        first = alice.run(make_program("gated", GATE_CLIENT + f"""
from qsrv.gateway import save_result
gate({gate.port})
save_result("first")
"""))
        conn = gate.accept()
        full = [True]
        refused = _failing_ends(monkeypatch, {first.job_id}, lambda f: full[0])
        conn.sendall(b"x")
        # the end, once retried, then each way of storing it FAILED: then retried later
        wait_for(lambda: len(refused) >= 6, what="every way of storing the end refused")
    assert first.status() is JobStatus.RUNNING
    second = alice.run("hello")
    assert second.status() is JobStatus.QUEUED  # the first still holds the user's slot
    assert alice.jobs(status="RUNNING").total == 1
    full[0] = False  # the disk has room again
    assert first.wait(timeout=60) is JobStatus.FAILED
    assert "could not store this job's outcome" in alice.job(first.job_id).info["error"]
    assert second.wait(timeout=60) is JobStatus.SUCCEEDED
    assert second.result() == "hello"


def test_a_job_whose_end_fits_nowhere_is_failed_with_the_tail_of_its_output(
        make_gateway: Callable[..., Any], alice_token: str, data_dir: Path,
        make_program: Callable[..., Program], monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk so full that not even the row with the output saved so far can be rewritten
    (SQLite rewrites whole rows): the job is not left RUNNING, it is FAILED with the tail of
    its output, saying so."""
    monkeypatch.setattr(service_module, "_FINAL_WRITE_RETRIES_S", (0.01,))
    alice = Client(make_gateway().url, alice_token)
    with Gate(timeout=60) as gate:
        job = alice.run(make_program("chatty", GATE_CLIENT + f"""
print("x" * 100000, flush=True)
gate({gate.port})
print("the last words")
"""))
        conn = gate.accept()
        wait_for(lambda: len(_stored_logs(data_dir, job.job_id)) > 100000,
                 what="the running job's output saved")
        refused = _failing_ends(monkeypatch, {job.job_id},
                                lambda f: len(f.get("logs") or b"x" * 5000) > 2048)
        conn.sendall(b"x")
        assert job.wait(timeout=60) is JobStatus.FAILED
    assert len(refused) == 4
    logs = job.logs()
    assert logs.endswith("the last words\n") and 0 < len(logs) <= 2048
    error = alice.job(job.job_id).info["error"]
    assert "it had succeeded" in error and "the disk had no room to keep them" in error
