"""Every awaitable of the task API, under asyncio and under trio, on a real local cluster.

Cancelling the awaiting task stops the wait only: the remote task goes on and its value is
there for the next `get`.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import anyio
import pytest

import qsrv
from qsrv.errors import GetTimeoutError, TaskError

pytestmark = [pytest.mark.usefixtures("local_cluster"), pytest.mark.anyio]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@qsrv.distribute_task
def square(x: int) -> int:
    return x * x


@qsrv.distribute_task
def fail(message: str) -> None:
    raise ValueError(message)


@qsrv.distribute_task
def wait_for_file(started: str, release: str, value: int) -> int:
    """Says it started (a file), then waits until the test releases it (another file)."""
    pathlib.Path(started).touch()
    deadline = time.monotonic() + 60
    while not pathlib.Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    return value


@qsrv.distribute_task
async def async_sum_of_squares(n: int) -> int:
    # inside an executor the socket is pumped by the waiting thread: the async form still works
    return sum(await qsrv.get([square(i) for i in range(n)]))


async def _until(path: pathlib.Path) -> None:
    with anyio.fail_after(60):
        while not path.exists():
            await anyio.sleep(0.01)


async def test_get_awaitable_forms() -> None:
    refs = [square(i) for i in range(6)]
    assert await qsrv.get(refs) == [i * i for i in range(6)]
    assert await qsrv.get(refs[3]) == 9
    assert await refs[4] == 16
    assert await qsrv.client.get_async(refs[:2]) == [0, 1]


async def test_get_raises_the_tasks_error() -> None:
    with pytest.raises(ValueError, match="boom") as info:
        await qsrv.get(fail("boom"))
    assert isinstance(info.value, TaskError)


async def test_wait_awaitable_forms() -> None:
    refs = [square(i) for i in range(4)]
    ready, pending = await qsrv.wait(refs, num_returns=4, timeout=60)
    assert ready == refs and pending == []
    ready, pending = await qsrv.client.wait_async(refs, num_returns=2)
    assert ready == refs[:2] and pending == refs[2:]


async def test_timeouts(tmp_path: pathlib.Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    ref = wait_for_file(str(started), str(release), 5)
    await _until(started)
    with pytest.raises(GetTimeoutError):
        await qsrv.get(ref, timeout=0.2)
    ready, pending = await qsrv.wait([ref], timeout=0.2)
    assert (ready, pending) == ([], [ref])
    release.touch()
    assert await qsrv.get(ref, timeout=60) == 5


async def test_cancelling_the_await_cancels_the_wait_not_the_task(tmp_path: pathlib.Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    ref = wait_for_file(str(started), str(release), 42)
    await _until(started)
    core = qsrv.client.connected().core
    waiting = anyio.Event()
    result: list[Any] = []

    async def getter() -> None:
        waiting.set()
        result.append(await qsrv.get(ref))

    async with anyio.create_task_group() as tg:
        tg.start_soon(getter)
        await waiting.wait()
        with anyio.fail_after(10):  # the getter registers its waiter, then blocks
            while ref._id not in core.waiters:
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    assert result == []
    assert ref._id not in core.waiters  # the cancelled wait left nothing behind
    release.touch()
    assert await qsrv.get(ref, timeout=60) == 42  # the task itself was not cancelled


async def test_wait_async_cancelled_by_move_on(tmp_path: pathlib.Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    ref = wait_for_file(str(started), str(release), 7)
    await _until(started)
    with anyio.move_on_after(0.2) as scope:
        await qsrv.wait([ref], num_returns=1)
    assert scope.cancelled_caught
    release.touch()
    ready, _ = await qsrv.wait([ref], timeout=60)
    assert ready == [ref]


async def test_async_task_awaits_nested_tasks() -> None:
    assert await qsrv.get(async_sum_of_squares(5), timeout=60) == 30


def test_get_blocks_in_plain_code() -> None:
    assert qsrv.get(square(3)) == 9
    ready, pending = qsrv.wait([square(2)], timeout=60)
    assert len(ready) == 1 and pending == []
