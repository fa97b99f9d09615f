"""Restarting the gateway: finished jobs survive, running ones never stay RUNNING."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from qsrv.errors import ConfigError
from qsrv.gateway import (
    Client,
    GatewayConfig,
    GatewayServer,
    JobFailedError,
    JobStatus,
    Program,
    start_gateway_process,
)
from qsrv.gateway._service import RESTART_ERROR
from tests._support import GATE_CLIENT, Gate, process_alive, process_env, stop_process, wait_for
from tests._support.gateway import ThreadedGateway


def test_restart_keeps_finished_jobs_and_fails_running_ones(
        make_gateway: Callable[..., ThreadedGateway], alice_token: str,
        make_program: Callable[..., Program], gate: Gate) -> None:
    first = make_gateway(max_jobs_per_user=1)
    alice = Client(first.url, alice_token)
    done = alice.run(make_program("done", "from qsrv.gateway import save_result\n"
                                          "print('finished output')\nsave_result({'v': 1})"))
    assert done.result(timeout=30) == {"v": 1}
    running = alice.run(make_program("running", GATE_CLIENT + f"""
print("running output")
gate({gate.port})
"""))
    conn = gate.accept()
    assert conn.recv(100) == b"started\n"
    queued = alice.run(make_program("queued", "from qsrv.gateway import save_result\n"
                                              "save_result('ran after restart')"))
    assert queued.status() is JobStatus.QUEUED
    first.stop()  # graceful: running jobs are ended, queued ones stay queued
    assert conn.recv(1) == b""  # the running job's process is gone

    second = make_gateway(max_jobs_per_user=1)
    alice = Client(second.url, alice_token)
    assert alice.job(done.job_id).result(timeout=30) == {"v": 1}
    assert "finished output" in alice.job(done.job_id).logs()
    with pytest.raises(JobFailedError, match="gateway stopped"):
        alice.job(running.job_id).result(timeout=30)
    assert "running output" in alice.job(running.job_id).logs()
    assert alice.job(queued.job_id).result(timeout=30) == "ran after restart"
    assert alice.jobs().total == 3


def test_gateway_crash_leaves_no_job_running(data_dir: Path, alice_token: str,
                                             make_program: Callable[..., Program],
                                             gate: Gate) -> None:
    proc, url = start_gateway_process(None, None, data_dir, extra_args=("--stop-grace", "1"))
    try:
        assert url.startswith("http://127.0.0.1:")
        alice = Client(url, alice_token)
        job = alice.run(make_program("orphan", GATE_CLIENT + f"""
import os
gate({gate.port}, str(os.getpid()).encode())
"""))
        conn = gate.accept()
        job_pid = int(conn.recv(100).strip())
        assert process_env(job_pid).get("QSRV_JOB_ID") == job.job_id
        proc.send_signal(signal.SIGKILL)  # a crash: no chance to clean up
        proc.wait()
        assert process_alive(job_pid)  # the job outlived its gateway (own session)
    finally:
        stop_process(proc)

    proc, url = start_gateway_process(None, None, data_dir)
    try:
        alice = Client(url, alice_token)
        again = alice.job(job.job_id)
        assert again.status() is JobStatus.FAILED
        assert again.info["error"] == RESTART_ERROR
        assert conn.recv(1) == b""  # the restarted gateway killed the orphaned process
        assert not process_alive(job_pid)
    finally:
        stop_process(job_pid)  # only if the restarted gateway left it behind
        assert stop_process(proc, 30) == 0


def test_one_gateway_per_data_dir(gateway: ThreadedGateway, data_dir: Path) -> None:
    import asyncio

    async def second() -> None:
        await GatewayServer(GatewayConfig(data_dir=data_dir, port=0)).start()

    with pytest.raises(ConfigError, match="another gateway"):
        asyncio.run(second())


def test_start_gateway_process_reports_a_failed_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="exited with code"):
        start_gateway_process(None, None, blocker / "data")


def test_output_of_running_jobs_reaches_the_database(
        gateway: ThreadedGateway, alice: Client, make_program: Callable[..., Program],
        gate: Gate) -> None:
    """What a crash would lose is at most ``log_flush_interval_s`` of output."""
    job = alice.run(make_program("flushed", GATE_CLIENT + f"""
print("progress 1 of 2")
gate({gate.port})
"""))
    conn = gate.accept()

    async def stored_logs() -> bytes:
        return gateway.server.service.store.job_logs(job.job_id)

    wait_for(lambda: b"progress 1 of 2" in gateway.call(stored_logs()), what="stored logs")
    conn.sendall(b"g")
    assert job.wait(timeout=30) is JobStatus.SUCCEEDED


def test_gateway_process_exits_with_its_parent(data_dir: Path) -> None:
    import subprocess
    import sys

    parent = (
        "import os, sys\n"
        "from qsrv.gateway import start_gateway_process\n"
        "proc, url = start_gateway_process(None, None, sys.argv[1])\n"
        "print(proc.pid, url, flush=True)\n"
        "os._exit(0)  # dies without stopping its gateway\n"
    )
    # The gateway inherits the stderr pipe, so run() returns only once the gateway is gone too.
    done = subprocess.run([sys.executable, "-c", parent, str(data_dir)], capture_output=True,
                          text=True, timeout=60)
    gateway_pid, url = done.stdout.split()
    assert url.startswith("http://127.0.0.1:")
    # Its pipes close while the kernel ends the process; the last step takes a moment.
    wait_for(lambda: not process_alive(int(gateway_pid)), what="the gateway to end")
