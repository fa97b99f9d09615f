"""Quotas and rate limits: queued jobs, programs, versions, stored bytes, password logins; and
a submission that does not rescan the queue."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qsrv.gateway import (
    Client,
    Program,
    TooManyRequestsError,
    UnauthorizedError,
    add_user,
    set_password,
)
from qsrv.gateway._queue import JobQueue
from qsrv.gateway._throttle import LoginThrottle, ThrottleRules
from tests._support import GATE_CLIENT, Gate
from tests._support.gateway import ThreadedGateway


def program(root: Path, title: str, source: str = "print(1)\n", **files: bytes) -> Program:
    folder = root / f"prog-{title}-{len(list(root.glob('prog-*')))}"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(textwrap.dedent(source))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return Program(title, "main.py", folder)


def test_queued_jobs_per_user(make_gateway: Callable[..., ThreadedGateway], data_dir: Path,
                              tmp_path: Path) -> None:
    alice_token = add_user(data_dir, "alice")[1]
    bob_token = add_user(data_dir, "bob")[1]
    gateway = make_gateway(max_jobs_per_user=1, max_queued_jobs_per_user=2,
                           job_sandbox="none")
    alice, bob = Client(gateway.url, alice_token), Client(gateway.url, bob_token)
    with Gate(timeout=60) as gate:
        alice.upload(program(tmp_path, "wait", GATE_CLIENT + f"gate({gate.port})\n"))
        first = alice.run("wait")
        conn = gate.accept()
        queued = [alice.run("wait"), alice.run("wait")]
        with pytest.raises(TooManyRequestsError, match="2 queued jobs"):
            alice.run("wait")
        bob.upload(program(tmp_path, "quick"))
        assert bob.run("quick").wait(timeout=60).name == "SUCCEEDED"  # others are not held up
        queued[1].stop()  # room again
        third = alice.run("wait")
        conn.sendall(b"x")
        for job in (first, queued[0], third):
            if job is not first:
                gate.accept().sendall(b"x")
            assert job.wait(timeout=60).name == "SUCCEEDED"


def test_programs_versions_and_bytes(make_gateway: Callable[..., ThreadedGateway],
                                     data_dir: Path, tmp_path: Path) -> None:
    token = add_user(data_dir, "alice")[1]
    gateway = make_gateway(max_programs_per_user=2, max_versions_per_program=2,
                           max_stored_bytes_per_user=200_000)
    alice = Client(gateway.url, token)
    alice.upload(program(tmp_path, "a"))
    alice.upload(program(tmp_path, "a"))
    with pytest.raises(TooManyRequestsError, match="versions"):
        alice.upload(program(tmp_path, "a"))
    alice.upload(program(tmp_path, "b"))
    with pytest.raises(TooManyRequestsError, match="programs"):
        alice.upload(program(tmp_path, "c"))
    import os

    with pytest.raises(TooManyRequestsError, match="quota"):
        alice.upload(program(tmp_path, "b", blob=os.urandom(250_000)))
    # files count in the same quota
    async def upload_file(size: int) -> tuple[int, Any]:
        form = aiohttp.FormData()
        form.add_field("file", os.urandom(size), filename="f.bin")
        async with aiohttp.ClientSession() as session, session.post(
                f"{gateway.url}/api/v1/files/upload?function=a", data=form,
                headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()

    assert asyncio.run(upload_file(10_000))[0] == 200
    status, body = asyncio.run(upload_file(250_000))
    assert status == 429 and "quota" in body["message"]
    assert [p.title for p in alice.programs()] == ["a", "b"]


def test_a_submission_never_scans_the_queue(make_gateway: Callable[..., ThreadedGateway],
                                           data_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Queued jobs are read once, at start; after that submitting and dispatching cost
    O(log n): nothing lists the queued jobs again."""
    from qsrv.gateway._store import Store

    token = add_user(data_dir, "alice")[1]
    gateway = make_gateway(max_jobs_per_user=1)
    alice = Client(gateway.url, token)
    alice.upload(program(tmp_path, "p"))

    def no_scan(self: Any, *statuses: Any) -> Any:
        raise AssertionError("the queue was scanned")

    monkeypatch.setattr(Store, "jobs_with_status", no_scan)
    jobs = [alice.run("p") for _ in range(5)]
    assert [j.wait(timeout=60).name for j in jobs] == ["SUCCEEDED"] * 5


def test_job_queue_order_and_caps() -> None:
    queue = JobQueue(max_running_per_user=2)
    for i in range(4):
        queue.add(1, f"a{i}", float(i))
    for i in range(2):
        queue.add(2, f"b{i}", 0.5 + i)
    started = []
    while (picked := queue.next_job()) is not None:
        started.append(picked[1])
    assert started == ["a0", "b0", "a1", "b1"]  # oldest first, two each
    assert queue.queued(1) == 2 and queue.next_job() is None
    assert queue.remove(1, "a2") and not queue.remove(1, "a2")
    queue.ended(1)
    assert queue.next_job() == (1, "a3")


def test_login_throttle_backs_off_per_user_and_per_address() -> None:
    now = [0.0]
    throttle = LoginThrottle(ThrottleRules(2, base_s=1.0, max_s=8.0),
                             ThrottleRules(4, base_s=1.0, max_s=8.0), clock=lambda: now[0])
    for _ in range(2):
        throttle.check("alice", "10.0.0.1")
        throttle.failed("alice", "10.0.0.1")
    throttle.check("alice", "10.0.0.1")  # two free failures
    throttle.failed("alice", "10.0.0.1")
    with pytest.raises(TooManyRequestsError) as caught:
        throttle.check("alice", "10.0.0.2")  # the user is backed off, from any address
    assert caught.value.retry_after == 1
    waits = []
    for _ in range(4):
        now[0] += 100
        throttle.check("alice", "10.0.0.3")
        throttle.failed("alice", "10.0.0.3")
        waits.append(throttle._records[("user", "alice")].locked_until - now[0])
    assert waits == [2.0, 4.0, 8.0, 8.0]  # doubling, capped
    throttle.succeeded("alice")
    throttle.check("alice", "10.0.0.3")
    for name in ("u1", "u2", "u3", "u4", "u5"):  # one address guessing many names
        throttle.failed(name, "10.0.0.9")
    with pytest.raises(TooManyRequestsError):
        throttle.check("someone", "10.0.0.9")


def test_password_logins_are_throttled(make_gateway: Callable[..., ThreadedGateway],
                                       data_dir: Path) -> None:
    add_user(data_dir, "alice")
    set_password(data_dir, "alice", "correct horse battery")
    gateway = make_gateway(login_failures_per_user=1)
    service = gateway.server.service
    for password in ("wrong", "wrong again"):
        with pytest.raises(UnauthorizedError):
            gateway.call(service.login("alice", password, "127.0.0.1"))
    with pytest.raises(TooManyRequestsError):
        gateway.call(service.login("alice", "correct horse battery", "127.0.0.1"))
