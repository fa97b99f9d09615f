"""Executors tagged by tenant, on a CLI-started cluster with a gateway of two users: a job's
tasks run only in executors started for its user, which hold a credential derived for that
user (never the cluster token) and, with bubblewrap, see no other process; a task of the
cluster token's own driver, for contrast, runs where the token is (so the checks can fail)."""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

import qsrv
from qsrv.gateway import Client, Program, add_user, start_gateway_process
from qsrv.protocol import executor_credential, job_credential
from tests._support import stop_process
from tests._support.cluster import TOKEN, Cluster
from tests.security._cluster import alices_gateway, refusal, run_script

PROBE = """
import os
import qsrv
from qsrv.gateway import save_result

@qsrv.distribute_task
def look():
    import glob
    import os
    raw = open("/proc/self/environ", "rb").read().split(b"\\0")
    env = dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)
    found = []  # any other process's environment or command line holding a token
    for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
        try:
            data = open(path, "rb").read()
        except OSError:
            continue
        if b"test-cluster-token" in data:
            found.append(path)
    return {"token": env.get("QSRV_TOKEN", ""), "found": found,
            "pids": len(glob.glob("/proc/[0-9]*")), "uid": os.getuid()}

qsrv.init()
save_result(qsrv.get([look(), look()]))
"""


RESERVING = """
import qsrv
from qsrv.gateway import save_result

@qsrv.distribute_task
def visit():
    import sys
    seen = sys.__dict__.setdefault("_visits", [])  # lives as long as the executor's process
    seen.append(1)
    raw = open("/proc/self/environ", "rb").read().split(b"\\0")
    env = dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)
    return {"visits": len(seen), "token": env.get("QSRV_TOKEN", "")}

qsrv.init()
r = qsrv.reserve({"cpu": 1}, name="job").wait(60)
save_result([qsrv.get(visit.options(reservation=r)()) for _ in range(3)])
"""


@qsrv.distribute_task
def look_here() -> dict[str, Any]:
    import glob

    found = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if b"test-cluster-token" in data:
            found.append(path)
    return {"found": found}


def test_jobs_tasks_run_in_executors_of_their_own_tenant(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    data_dir = tmp_path / "gateway"
    tokens = {user: add_user(data_dir, user)[1] for user in ("alice", "bob")}
    gateway, url = start_gateway_process(cluster.address, TOKEN, data_dir,
                                         extra_args=("--job-sandbox", "none"))
    try:
        folder = tmp_path / "job"
        folder.mkdir()
        (folder / "main.py").write_text(textwrap.dedent(PROBE))
        seen = {}
        for user in ("alice", "bob"):
            job = Client(url, tokens[user]).run(Program("p", "main.py", folder))
            seen[user] = job.result(timeout=120)
        tenants = {}
        for user, results in seen.items():
            for result in results:
                assert result["token"].startswith("qsrvcred:executor/"), result
                assert TOKEN not in result["token"]
                if shutil.which("bwrap"):
                    assert result["found"] == [], result  # no process of the host is visible
                    assert result["pids"] <= 3, result  # its own PID namespace
            [tenants[user]] = {r["token"].split("/")[1] for r in results}
        assert tenants["alice"] != tenants["bob"]  # each user's tasks: executors of its own
        status = cluster.status()
        assert status["workers"][0]["executors"] >= 3  # the shared one(s), alice's, bob's
    finally:
        stop_process(gateway, 30)
    # the cluster token's driver: its task runs where the token can be found (the check works)
    qsrv.init(address=cluster.address, token=TOKEN)
    assert qsrv.get(look_here(), timeout=60)["found"] != []


def test_an_executors_credential_is_an_executor_and_nothing_else(cluster: Cluster) -> None:
    address = cluster.address
    executor = executor_credential(TOKEN, "alice", "w1", time.time() + 60)
    job = job_credential(TOKEN, "alice", "j1", time.time() + 60)
    assert refusal(address, executor, "executor") == ""
    assert "never as 'driver'" in refusal(address, executor, "driver")
    assert "never as 'worker'" in refusal(address, executor, "worker")
    assert "never as 'executor'" in refusal(address, job, "executor")
    assert refusal(address, job, "driver") == ""


def test_a_jobs_reservation_keeps_an_executor_of_its_tenant_warm(cluster: Cluster,
                                                                 tmp_path: Path) -> None:
    with alices_gateway(cluster.address, tmp_path) as alice:
        results = run_script(alice, tmp_path, RESERVING)
    assert [r["visits"] for r in results] == [1, 2, 3]
    assert all(r["token"].startswith("qsrvcred:executor/") for r in results)
