"""Jobs end to end: a real gateway on loopback running real program subprocesses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qsrv.errors import GetTimeoutError
from qsrv.gateway import (
    Client,
    GatewayConfig,
    GatewayServer,
    JobFailedError,
    JobStatus,
    JobStoppedError,
    NotFoundError,
    Program,
    add_user,
)
from tests._support import GATE_CLIENT, Gate, process_alive, wait_for
from tests._support.gateway import ThreadedGateway

ECHO = """
from qsrv.gateway import get_arguments, save_result
args = get_arguments()
print("got", sorted(args))
save_result({"doubled": args["x"] * 2})
"""


def test_full_cycle(alice: Client, make_program: Callable[..., Program], gate: Gate) -> None:
    program = make_program("cycle", GATE_CLIENT + f"""
from qsrv.gateway import get_arguments, save_result
import sys
args = get_arguments()
print("working on", args["n"])
print("a warning", file=sys.stderr)
gate({gate.port})
save_result([i * i for i in range(args["n"])])
""")
    info = alice.upload(program)
    assert (info.title, info.version, info.entrypoint) == ("cycle", 1, "main.py")
    job = alice.run("cycle", {"n": 4})
    conn = gate.accept()
    assert conn.recv(100) == b"started\n"
    assert job.status() == JobStatus.RUNNING
    # output crosses a pipe to the gateway: no event marks its arrival
    wait_for(lambda: "a warning" in job.logs(), what="the job's stderr in its logs")
    assert "working on 4" in job.logs()
    conn.sendall(b"g")
    assert job.result(timeout=30) == [0, 1, 4, 9]
    assert job.status() is JobStatus.SUCCEEDED
    assert job.info["exit_code"] == 0 and job.info["finished_at"]
    logs = job.logs()
    assert "working on 4" in logs and "a warning" in logs
    assert [e["data"]["status"] for e in job.events()] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    again = alice.job(job.job_id)
    assert again.result() == [0, 1, 4, 9]


def test_failing_program_reports_its_traceback(alice: Client,
                                               make_program: Callable[..., Program]) -> None:
    program = make_program("fails", """
def inner():
    raise ValueError("the answer is not 42")
print("before the failure")
inner()
""")
    job = alice.run(program)
    with pytest.raises(JobFailedError) as info:
        job.result(timeout=30)
    err = info.value
    assert err.exit_code == 1 and err.status == "FAILED" and err.job_id == job.job_id
    assert "Traceback (most recent call last)" in err.error
    assert "in inner" in err.error
    assert "ValueError: the answer is not 42" in err.error
    assert job.status() is JobStatus.FAILED
    assert "ValueError" in job.info["error"]
    assert "before the failure" in job.logs()


def test_exit_code_without_traceback(alice: Client,
                                     make_program: Callable[..., Program]) -> None:
    job = alice.run(make_program("exit3", "import sys; sys.exit(3)"))
    with pytest.raises(JobFailedError, match="exit code 3"):
        job.result(timeout=30)
    assert job.info["exit_code"] == 3


def test_results_of_any_serialisable_type(alice: Client,
                                          make_program: Callable[..., Program]) -> None:
    alice.upload(make_program("types", """
import numpy as np
from qsrv.gateway import get_arguments, save_result
kind = get_arguments()["kind"]
if kind == "array":
    save_result(np.arange(5) * 1.5)
elif kind == "function":
    offset = 10
    save_result(lambda v: v + offset)
elif kind == "set":
    save_result({1, 2, 3})
elif kind == "twice":
    save_result("first")
    save_result("second")
# "none": saves nothing
"""))
    jobs = {kind: alice.run("types", {"kind": kind})
            for kind in ("array", "function", "set", "none", "twice")}
    assert list(jobs["array"].result(timeout=30)) == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert jobs["function"].result(timeout=30)(1) == 11
    assert jobs["set"].result(timeout=30) == {1, 2, 3}
    assert jobs["none"].result(timeout=30) is None
    assert jobs["twice"].result(timeout=30) == "second"


def test_arguments_env_vars_and_sibling_modules(alice: Client,
                                               make_program: Callable[..., Program]) -> None:
    program = make_program("env", """
import os
from helper import describe
from qsrv.gateway import get_arguments, save_result
save_result({
    "args": get_arguments(),
    "greeting": os.environ["GREETING"],
    "gateway_token_leaked": "QSRV_GATEWAY_TOKEN" in os.environ,
    "helper": describe(),
    "job_id": os.environ["QSRV_JOB_ID"],
})
""", env_vars={"GREETING": "hello"}, **{"helper.py": "def describe():\n    return 'ok'\n"})
    job = alice.run(program, {"a": [1, 2], "b": None})
    result = job.result(timeout=30)
    assert result == {"args": {"a": [1, 2], "b": None}, "greeting": "hello",
                      "gateway_token_leaked": False, "helper": "ok", "job_id": job.job_id}


def test_versions(alice: Client, make_program: Callable[..., Program]) -> None:
    assert alice.upload(make_program("v", "from qsrv.gateway import save_result\n"
                                          "save_result(1)")).version == 1
    assert alice.upload(make_program("v", "from qsrv.gateway import save_result\n"
                                          "save_result(2)")).version == 2
    assert alice.run("v").result(timeout=30) == 2
    assert alice.run("v", version=1).result(timeout=30) == 1
    assert [(p.title, p.version) for p in alice.programs()] == [("v", 2)]
    with pytest.raises(NotFoundError):
        alice.run("v", version=7)
    with pytest.raises(NotFoundError):
        alice.run("no-such-program")


def test_stop_while_running_kills_the_process_tree(
        alice: Client, make_program: Callable[..., Program], gate: Gate) -> None:
    program = make_program("tree", GATE_CLIENT + f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
gate({gate.port}, f"{{child.pid}}".encode())
""")
    job = alice.run(program)
    conn = gate.accept()
    child_pid = int(conn.recv(100).strip())
    assert job.status() is JobStatus.RUNNING
    assert process_alive(child_pid)
    assert job.stop(timeout=30) is JobStatus.STOPPED
    assert not process_alive(child_pid)
    assert conn.recv(1) == b""  # the job's end of the socket closed: its process is gone
    with pytest.raises(JobStoppedError):
        job.result(timeout=30)
    statuses = [e["data"]["status"] for e in job.events()]
    assert statuses == ["QUEUED", "RUNNING", "STOPPING", "STOPPED"]
    assert job.stop() is JobStatus.STOPPED  # stopping again changes nothing


def test_stop_escalates_to_sigkill(make_gateway: Callable[..., ThreadedGateway],
                                   alice_token: str, make_program: Callable[..., Program],
                                   gate: Gate) -> None:
    gateway = make_gateway(stop_grace_s=0.3)
    alice = Client(gateway.url, alice_token)
    program = make_program("stubborn", GATE_CLIENT + f"""
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
gate({gate.port})
""")
    job = alice.run(program)
    gate.accept().recv(100)
    assert job.stop(timeout=30) is JobStatus.STOPPED
    assert job.info["exit_code"] == -9


def test_concurrency_limit_and_stop_while_queued(
        make_gateway: Callable[..., ThreadedGateway], alice_token: str, bob_token: str,
        make_program: Callable[..., Program], gate: Gate) -> None:
    gateway = make_gateway(max_jobs_per_user=1)
    alice, bob = Client(gateway.url, alice_token), Client(gateway.url, bob_token)
    blocker = make_program("block", GATE_CLIENT + f"gate({gate.port})\n")
    alice.upload(blocker)
    first = alice.run("block")
    conn = gate.accept()
    second = alice.run("block")
    third = alice.run("block")
    assert second.status() is JobStatus.QUEUED and third.status() is JobStatus.QUEUED
    # Another user's job is not held back by alice's limit.
    quick = bob.run(make_program("quick", "from qsrv.gateway import save_result\n"
                                          "save_result('bob')"))
    assert quick.result(timeout=30) == "bob"
    assert second.stop(timeout=30) is JobStatus.STOPPED
    assert second.info["started_at"] is None
    conn.sendall(b"g")
    assert first.wait(timeout=30) is JobStatus.SUCCEEDED
    conn = gate.accept()  # the third job, never the stopped second
    conn.sendall(b"g")
    assert third.wait(timeout=30) is JobStatus.SUCCEEDED
    assert [e["data"]["status"] for e in second.events()] == ["QUEUED", "STOPPED"]


def test_result_timeout_and_wait(alice: Client, make_program: Callable[..., Program],
                                 gate: Gate) -> None:
    job = alice.run(make_program("slow", GATE_CLIENT + f"gate({gate.port})\n"))
    conn = gate.accept()
    with pytest.raises(GetTimeoutError):
        job.result(timeout=0.2)
    assert job.wait(timeout=0.1) is JobStatus.RUNNING
    conn.sendall(b"g")
    assert job.result(timeout=30) is None


def test_logs_are_capped_keeping_head_and_tail(
        make_gateway: Callable[..., ThreadedGateway], alice_token: str,
        make_program: Callable[..., Program]) -> None:
    gateway = make_gateway(max_log_bytes=2000)
    alice = Client(gateway.url, alice_token)
    job = alice.run(make_program("chatty", """
print("FIRST LINE")
for i in range(5000):
    print("line", i)
print("LAST LINE")
"""))
    job.result(timeout=30)
    logs = job.logs()
    assert logs.startswith("FIRST LINE")
    assert logs.rstrip().endswith("LAST LINE")
    assert "bytes of output dropped" in logs
    assert len(logs) < 2200


def test_job_listing(alice: Client, bob: Client, make_program: Callable[..., Program]) -> None:
    alice.upload(make_program("list", "import sys; sys.exit(int(__import__('qsrv.gateway')"
                                      ".gateway.get_arguments()['code']))"))
    jobs = [alice.run("list", {"code": i % 2}) for i in range(5)]
    for job in jobs:
        job.wait(timeout=30)
    page = alice.jobs(limit=2)
    assert page.total == 5 and [j.job_id for j in page] == [jobs[4].job_id, jobs[3].job_id]
    page = alice.jobs(limit=10, offset=3)
    assert [j.job_id for j in page] == [jobs[1].job_id, jobs[0].job_id]
    failed = alice.jobs(limit=10, status="FAILED")
    assert failed.total == 2 and {j.job_id for j in failed} == {jobs[1].job_id, jobs[3].job_id}
    both = alice.jobs(status=[JobStatus.FAILED, JobStatus.SUCCEEDED])
    assert both.total == 5
    assert alice.jobs(created_after=time.time() + 60).total == 0
    assert alice.jobs(created_after=0.0).total == 5
    assert bob.jobs().total == 0


def test_async_forms(data_dir: Path, make_program: Callable[..., Program], gate: Gate) -> None:
    token = add_user(data_dir, "carol")[1]
    program = make_program("async", GATE_CLIENT + f"""
from qsrv.gateway import get_arguments, save_result
gate({gate.port})
save_result(get_arguments()["v"] + 1)
""")

    async def scenario() -> None:
        async with GatewayServer(GatewayConfig(data_dir=data_dir, port=0)) as server:
            client = Client(server.url, token)
            info = await client.upload_async(program)
            assert info.version == 1
            job = await client.run_async("async", {"v": 41})
            conn = await asyncio.to_thread(gate.accept)
            assert await job.status_async() is JobStatus.RUNNING
            waiter = asyncio.create_task(job.result_async(timeout=30))
            await asyncio.sleep(0)
            assert not waiter.done()
            conn.sendall(b"g")
            assert await waiter == 42
            assert (await client.jobs_async()).total == 1
            assert (await client.job_async(job.job_id)).job_id == job.job_id
            assert [p.title for p in await client.programs_async()] == ["async"]
            assert "Traceback" not in await job.logs_async()
            assert await job.stop_async() is JobStatus.SUCCEEDED

    asyncio.run(scenario())


def test_sync_forms_inside_a_running_loop(alice: Client,
                                          make_program: Callable[..., Program]) -> None:
    job = alice.run(make_program("in-loop", "from qsrv.gateway import save_result\n"
                                            "save_result('ok')"))

    async def notebook_cell() -> object:  # e.g. Jupyter: a loop already runs in this thread
        return job.result(timeout=30)

    assert asyncio.run(notebook_cell()) == "ok"


def test_runtime_outside_a_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qsrv.gateway import get_arguments, save_result

    assert get_arguments() == {}
    with pytest.warns(RuntimeWarning, match="outside a job"):
        save_result({"a": 1})
    with pytest.raises(Exception, match="pickle"):
        save_result(__import__("threading").Lock())
    target = tmp_path / "result.pkl"
    monkeypatch.setenv("QSRV_JOB_RESULT_PATH", str(target))
    save_result([1, 2])
    import pickle

    assert pickle.loads(target.read_bytes()) == [1, 2]


def test_stop_right_after_start_is_not_lost(data_dir: Path,
                                           make_program: Callable[..., Program]) -> None:
    """A stop that comes before the job's supervising task first runs still stops it."""
    from qsrv.gateway._archive import pack_directory
    from qsrv.gateway._runtime import dumps

    token = add_user(data_dir, "erin")[1]
    program = make_program("instant", "from qsrv.gateway import save_result\n"
                                      "save_result('ran')")

    async def scenario() -> None:
        async with GatewayServer(GatewayConfig(data_dir=data_dir, port=0)) as server:
            service = server.service
            user = service.authenticate(token)
            await service.upload_program(user, title="instant", entrypoint="main.py",
                                         archive=pack_directory(program.working_dir))
            job = service.submit_job(user, "instant", dumps({}))
            assert job.status is JobStatus.RUNNING  # dispatched at once, task not yet run
            stopped = await service.stop(user, job.job_id, timeout=30)
            assert stopped.status is JobStatus.STOPPED
            assert stopped.exit_code is None  # no process was ever started

    asyncio.run(scenario())
