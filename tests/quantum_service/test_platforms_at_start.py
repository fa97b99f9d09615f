"""A platform asked for right after the gateway and its cluster start: the service waits
(bounded) for the workers' engine probes instead of answering that the platform is unknown.

A fresh cluster per test: its scheduler and gateway start before any worker exists; the
worker is started only once the service is looking each platform up, so every request
certainly came before any probe had reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qsrv.errors import NotFoundError
from qsrv.gateway import GatewayConfig, add_user
from qsrv.gateway._quantum import JobSpec, QStatus, SessionStatus
from tests._support.cluster import TOKEN, Cluster
from tests._support.gateway import ThreadedGateway
from tests.quantum_service.conftest import AER, Quantum, bell

PULSER = "pulser.qutip.cpu"


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Cluster, ThreadedGateway, str]]:
    """A scheduler with no worker yet, and a gateway joined to it; alice's token."""
    data = tmp_path / "data"
    token = add_user(data, "alice")[1]
    cluster = Cluster()
    gateway = None
    try:
        gateway = ThreadedGateway(GatewayConfig(
            data_dir=data, port=0, cluster_address=cluster.address, cluster_token=TOKEN))
        service = gateway.server.service.quantum
        # Room for a cold engine probe (importing Perceval and Pulser) on a loaded machine.
        service.config = dataclasses.replace(service.config, probe_wait_s=120.0)
        yield cluster, gateway, token
    finally:
        if gateway is not None:
            gateway.stop()
        cluster.stop()


def _start(gateway: ThreadedGateway, coro: Any) -> Future[Any]:
    return asyncio.run_coroutine_threadsafe(coro, gateway.loop)


def _count_lookups(gateway: ThreadedGateway) -> threading.Semaphore:
    """A semaphore released each time the service starts looking a platform up."""
    service = gateway.server.service.quantum
    original = service.platform
    started = threading.Semaphore(0)

    async def platform(name: str) -> Any:
        started.release()
        return await original(name)

    async def install() -> None:
        service.platform = platform

    gateway.call(install())
    return started


async def _http_platform(url: str, token: str, name: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(
            f"{url}/v1/platforms/{name}", headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=180)) as response:
        return response.status, await response.json()


def test_sessions_and_batches_right_after_start(
        fresh: tuple[Cluster, ThreadedGateway, str]) -> None:
    cluster, gateway, _ = fresh
    q = Quantum(gateway)
    alice = q.user("alice")
    service = q.service
    lookups = _count_lookups(gateway)
    listing = _start(gateway, service.platforms())  # starts before the lookups below
    session = _start(gateway, service.open_session(alice, AER))
    batch = _start(gateway, service.create_batch(alice, bell(), [JobSpec(5)], platform=AER))
    pulser = _start(gateway, service.platform(PULSER))  # an engine probe must have reported
    for _ in range(3):
        assert lookups.acquire(timeout=60)
    assert gateway.call(_workers(service)) == 0
    cluster.worker("w1", "--cpus", "2")  # only now: every request above was being handled

    opened, created = session.result(180)
    assert created and opened.platform == AER
    assert q.wait_session(alice, opened.id, 120, statuses=[SessionStatus.RUNNING]).status \
        is SessionStatus.RUNNING
    done = q.wait_batch(alice, batch.result(180).id, 120)
    assert done.status is QStatus.DONE
    assert sum(q.result(alice, done.jobs[0].id).counts.values()) == 5
    assert pulser.result(180).name == PULSER  # the test extra installs Pulser
    assert {AER, PULSER} <= {p.name for p in listing.result(180)}
    q.terminate_session(alice, opened.id)
    # Once every worker has reported, an unknown platform is refused at once, as before.
    with pytest.raises(NotFoundError, match=r"no platform .aer\.quantum\.magic.*offers"):
        q.platform("aer.quantum.magic")


def test_the_native_door_waits_too(fresh: tuple[Cluster, ThreadedGateway, str]) -> None:
    cluster, gateway, token = fresh
    lookups = _count_lookups(gateway)
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(asyncio.run, _http_platform(gateway.url, token, AER))
        assert lookups.acquire(timeout=60)  # the door is handling it
        assert gateway.call(_workers(gateway.server.service.quantum)) == 0
        cluster.worker("w1", "--cpus", "2")
        status, body = asked.result(180)
    assert status == 200, body
    assert body["name"] == AER and body["max_qubits"] > 0


async def _workers(service: Any) -> int:
    status = await service.cluster.status()
    return len(status.get("workers") or ())
