"""The gateway's link to its cluster: ``flush`` waits for revocations to go out on an event,
not on a timer. A real scheduler started through the CLI; the link's send is held in its
thread until the test lets it go."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from qsrv.errors import AuthenticationError
from qsrv.gateway._cluster import ClusterLink
from qsrv.transport import SyncConnection
from tests._support.cluster import TOKEN, Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


def test_flush_returns_once_the_revocation_went_out_without_polling(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = threading.Event(), threading.Event()
    original_send = SyncConnection.send

    def held_send(self: SyncConnection, messages: list[Any]) -> None:
        entered.set()
        release.wait(60)
        original_send(self, messages)

    slept_in_flush: list[float] = []
    real_sleep = asyncio.sleep

    async def spying_sleep(delay: float, *args: Any) -> Any:
        if sys._getframe(1).f_code.co_name == "flush":
            slept_in_flush.append(delay)
        return await real_sleep(delay, *args)

    async def scenario() -> None:
        link = ClusterLink(cluster.address, TOKEN, lambda: [])
        link.start()
        try:
            await asyncio.wait_for(link.connected.wait(), 30)
            credential, credential_id = link.credential("gw.1", "job-1", 2e9)
            monkeypatch.setattr(SyncConnection, "send", held_send)
            monkeypatch.setattr(asyncio, "sleep", spying_sleep)
            link.revoke(credential_id)
            flushing = asyncio.create_task(link.flush(60))
            await asyncio.to_thread(entered.wait, 30)  # the revocation is being sent
            assert not flushing.done()  # flush waits for it
            release.set()
            await asyncio.wait_for(flushing, 60)
            monkeypatch.undo()
            # it went out: the scheduler refuses the job's credential from now on
            with pytest.raises(AuthenticationError):
                await asyncio.to_thread(SyncConnection, cluster.address, credential, "driver",
                                        timeout=10)
        finally:
            release.set()
            await link.close()

    asyncio.run(scenario())
    assert slept_in_flush == []  # woken by the send's end, not by a timer


def test_flush_returns_at_once_while_the_cluster_is_unreachable() -> None:
    async def scenario() -> None:
        link = ClusterLink("127.0.0.1:9", TOKEN, lambda: [], connect_timeout=1.0)
        link.revoke("some-credential")  # waits for a connection that does not come
        try:
            await asyncio.wait_for(link.flush(600), 30)
        finally:
            await link.close()

    asyncio.run(scenario())
