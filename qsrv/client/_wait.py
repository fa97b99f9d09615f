"""Waiting for values: `get` and `wait` over a client core, blocking or async.

Depends only on the core (and the one sync/async bridge). Values are pushed to the core by a
thread (the driver's reader) or, inside an executor, pumped by the waiting thread itself
(`core.pumps`): an async wait then runs the blocking wait in a worker thread.

Cancelling an async wait (the awaiting task is cancelled, or its timeout passes) stops the
wait only: the tasks behind the refs go on, and their values arrive for a later `get`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import anyio

from qsrv import _bridge
from qsrv.client import _progress
from qsrv.errors import GetTimeoutError

if TYPE_CHECKING:  # the core makes ObjectRefs, whose `await` waits here
    from qsrv.client._core import ClientCore


def wait_ids(core: ClientCore, ids: list[int], num: int, timeout: float | None,
             interrupt: threading.Event | None = None) -> set[int]:
    """The ids (of `ids`) whose values are here once `num` of them are, or `timeout` passed,
    or the connection ended, or `interrupt` was set. Blocks."""
    ready: set[int] = set()
    done = interrupt or threading.Event()
    guard = threading.Lock()

    def on_ready(oid: int) -> None:
        with guard:
            ready.add(oid)
            if len(ready) >= num:
                done.set()

    unique = list(dict.fromkeys(ids))
    for oid in core.watch(unique, on_ready):
        on_ready(oid)
    if num <= 0:
        done.set()
    try:
        if not done.is_set():
            core.block(done, timeout)
    finally:
        core.unwatch(unique, on_ready)
    with guard:
        return set(ready)


async def wait_ids_async(core: ClientCore, ids: list[int], num: int,
                         timeout: float | None) -> set[int]:
    """`wait_ids` for async code (asyncio or trio)."""
    if core.pumps:  # inside an executor: the waiting thread must pump the socket itself
        interrupt = threading.Event()
        return await _bridge.run_blocking(
            lambda: wait_ids(core, ids, num, timeout, interrupt), interrupt=interrupt.set)
    waker = _bridge.Waker()
    ready: set[int] = set()
    guard = threading.Lock()

    def on_ready(oid: int) -> None:  # on the reader thread
        with guard:
            ready.add(oid)
            if len(ready) == num:
                waker.wake()

    unique = list(dict.fromkeys(ids))
    for oid in core.watch(unique, on_ready):
        with guard:
            ready.add(oid)
    try:
        with guard:
            waiting = len(ready) < num
        if waiting:
            with anyio.move_on_after(timeout):
                await waker.wait()
    finally:
        core.unwatch(unique, on_ready)
    with guard:
        return set(ready)


def _values(core: ClientCore, ids: list[int], ready: set[int], timeout: float | None
            ) -> list[Any]:
    unique = len(set(ids))
    if len(ready) < unique and core.closed is None:
        raise GetTimeoutError(f"get() timed out after {timeout:g} s with "
                              f"{unique - len(ready)} of {unique} values not ready")
    return [core.value(oid) for oid in ids]


def get(core: ClientCore, ids: list[int], timeout: float | None,
        progress: bool | None = None) -> list[Any]:
    """The values of `ids`, in order; raises a task's error, or GetTimeoutError. A progress
    bar as `_progress.wanted` decides."""
    count = len(set(ids))
    show, delay = _progress.wanted(progress, count)
    if not show:
        return _values(core, ids, wait_ids(core, ids, count, timeout), timeout)
    bar = _progress.RefProgress(core, ids, delay=delay)
    try:
        ready = wait_ids(core, ids, count, timeout)
    finally:
        bar.close()
    return _values(core, ids, ready, timeout)


async def get_async(core: ClientCore, ids: list[int], timeout: float | None,
                    progress: bool | None = None) -> list[Any]:
    """`get` for async code."""
    count = len(set(ids))
    show, delay = _progress.wanted(progress, count)
    if not show:
        return _values(core, ids, await wait_ids_async(core, ids, count, timeout), timeout)
    bar = _progress.RefProgress(core, ids, delay=delay)
    try:
        ready = await wait_ids_async(core, ids, count, timeout)
    finally:
        bar.close()
    return _values(core, ids, ready, timeout)
