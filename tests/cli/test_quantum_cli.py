"""``qsrv platforms``, ``qsrv sessions [--status S]``, ``qsrv sessions terminate ID`` and
``qsrv batches`` against a real cluster and gateway, run as a user runs them (``python -m
qsrv`` in a child process, the gateway and token from the environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests._support import wait_for
from tests.gateway.quantum_support import AER, BELL, QuantumEnv, quantum_env, slow_qasm


@pytest.fixture(scope="module")
def env() -> Iterator[QuantumEnv]:
    with quantum_env() as e:
        yield e


def qsrv(env: QuantumEnv, *args: str, token: str | None = None,
         from_env: bool = True) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    if from_env:
        environ.update(QSRV_GATEWAY=env.url, QSRV_GATEWAY_TOKEN=token or env.alice_token)
    return subprocess.run([sys.executable, "-m", "qsrv", *args], capture_output=True,
                          text=True, timeout=120, env=environ)


@pytest.mark.parametrize("command", [["platforms"], ["sessions"], ["sessions", "terminate"],
                                     ["batches"], ["batches", "show"]])
def test_help(env: QuantumEnv, command: list[str]) -> None:
    out = qsrv(env, *command, "--help")
    assert out.returncode == 0 and "usage: qsrv " + command[0] in out.stdout


def test_platforms(env: QuantumEnv) -> None:
    out = qsrv(env, "platforms")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[:2] == ["PLATFORM", "VERSION"]
    assert any(line.startswith(AER + " ") for line in out.stdout.splitlines())
    listed = json.loads(qsrv(env, "platforms", "--json").stdout)
    assert AER in [p["name"] for p in listed]


def test_sessions_list_filter_and_terminate(env: QuantumEnv) -> None:
    session = env.alice.session(AER, deduplication_id="cli")
    out = qsrv(env, "sessions", "--status", "starting", "--status", "running")
    assert out.returncode == 0 and session.id in out.stdout and "cli" in out.stdout
    assert session.id not in qsrv(env, "sessions", "--status", "stopped").stdout
    assert session.id not in qsrv(env, "sessions", token=env.bob_token).stdout
    refused = qsrv(env, "sessions", "terminate", session.id, token=env.bob_token)
    assert refused.returncode == 1 and "error" in refused.stderr
    ended = qsrv(env, "sessions", "--gateway", env.url, "--token", env.alice_token,
                 "terminate", session.id, from_env=False)
    assert ended.returncode == 0 and "stopped" in ended.stdout and "terminated" in ended.stdout
    listed = json.loads(qsrv(env, "sessions", "--status", "stopped", "--json").stdout)
    assert [s["reason"] for s in listed if s["id"] == session.id] == ["terminated"]
    bad = qsrv(env, "sessions", "--status", "sleeping")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_terminate_waits_for_stopped_unless_no_wait(env: QuantumEnv) -> None:
    from qsrv.gateway import QStatus

    for flags, shown in (["--no-wait"], "stopping"), ([], "stopped"):
        session = env.alice.session(AER)
        job = session.run(slow_qasm(), shots=1)
        wait_for(lambda job=job: job.refresh().status is QStatus.RUNNING, timeout=60)
        ended = qsrv(env, "sessions", "terminate", session.id, *flags)
        assert ended.returncode == 0, ended.stderr
        assert ended.stdout.split()[1:] == [shown, "(terminated)"]
        assert session.wait(120).status.value == "stopped"


def test_batches_list_and_show(env: QuantumEnv) -> None:
    batch = env.alice.create_batch(BELL, [{"shots": 5}, {"shots": 6}], platform=AER,
                                   wait=True)
    out = qsrv(env, "batches", "--status", "DONE", "--closed")
    assert out.returncode == 0 and batch.id in out.stdout
    assert batch.id not in qsrv(env, "batches", "--open").stdout
    shown = qsrv(env, "batches", "--gateway", env.url, "show", batch.id,
                 "--token", env.alice_token, from_env=False)
    assert shown.returncode == 0 and all(j.id in shown.stdout for j in batch.ordered_jobs)
    data = json.loads(qsrv(env, "batches", "--json", "--limit", "1").stdout)
    assert data["total"] >= 1 and len(data["batches"]) == 1
    too_many = qsrv(env, "batches", "--limit", "1000")
    assert too_many.returncode == 1 and "limit" in too_many.stderr
    missing = qsrv(env, "batches", "show", batch.id, token=env.bob_token)
    assert missing.returncode == 1 and "error" in missing.stderr
