"""Edges of a job's life. A job that cannot be started is never left QUEUED out of the queue:
one the store would not mark RUNNING (a full disk) waits and starts once the store recovers; one
that cannot start for another reason is FAILED with why. A stop that comes after the job's
process exited does not turn its success into STOPPED. Real gateways, real SQLite, real job
processes; the store's failure is simulated as SQLite reports a full disk."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import psutil
import pytest

import qsrv.gateway._runner as runner_module
from qsrv.gateway import Client, JobStatus, Program
from qsrv.gateway._store import Store
from qsrv.gateway._upstream_files import UserFiles
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
        alice: Client, make_program: Callable[..., Program],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The job saves its result and exits 0, leaving a process of its own session that holds
    its output open; while the gateway drains that output the user asks to stop the job. The
    stop came too late to end anything: the job SUCCEEDED, with its result."""
    monkeypatch.setattr(runner_module, "_GROUP_EXIT_TIMEOUT_S", 120.0)  # drain until released
    with Gate(timeout=60) as gate:
        job = alice.run(make_program("late-stop", f"""
import os, subprocess, sys
from qsrv.gateway import save_result
save_result("done")
child = {GATE_CLIENT!r} + "gate({gate.port}, sys.argv[1].encode())"
subprocess.Popen([sys.executable, "-c", "import sys\\n" + child, str(os.getpid())],
                 start_new_session=True)
"""))
        conn = gate.accept()
        main_pid = int(conn.recv(100).split()[0])
        wait_for(lambda: not psutil.pid_exists(main_pid), what="the job's process reaped")
        assert job.status() is JobStatus.RUNNING  # its output is still being read
        assert job.stop(timeout=0.1) is JobStatus.STOPPING
        conn.close()  # the leftover process ends, and with it the job's output
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
