"""The one bridge between blocking code and async code, on anyio (asyncio and trio alike).

qsrv's IO runs on threads of its own (the driver's reader, the gateway client's loop), so
async callers never need qsrv's event loop: they wait on an `anyio.Event` that those threads
set through a `Waker`. What runs where:

- `in_async_context()`: whether this thread runs an event loop (asyncio or trio); the public
  calls that return a value in plain code return an awaitable there.
- `Waker`: made in the waiting task's loop; `wake()` from any thread sets its event there.
- `wait_future(fut)`: await a `concurrent.futures.Future` from any library; cancelling the
  awaiting task cancels the future.
- `run_blocking(fn, ..., interrupt=...)`: run a blocking call in a worker thread; when the
  awaiting task is cancelled, `interrupt()` is called so the thread stops promptly.
- `call(async_fn, ...)` / `await call_async(async_fn, ...)`: run an asyncio-only coroutine
  function (aiohttp) from plain code, or from any async library: directly when the caller runs
  asyncio, otherwise on qsrv's private asyncio loop in a daemon thread.

Cancellation of the awaiting task cancels the wait, never the remote work behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

T = TypeVar("T")
P = ParamSpec("P")


def in_async_context() -> bool:
    """True when this thread is running an event loop (asyncio or trio)."""
    try:
        anyio.lowlevel.current_token()
    except anyio.NoEventLoopError:
        return False
    except RuntimeError:  # pragma: no cover - older anyio raises a plain RuntimeError
        return False
    return True


def _running_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Waker:
    """An event of the current task's loop that any thread may set.

    Made inside the waiting task; ``wake()`` is safe from any thread, many times, and after the
    loop has finished (then it does nothing).
    """

    __slots__ = ("_event", "_soon")

    def __init__(self) -> None:
        self._event = anyio.Event()
        native = anyio.lowlevel.current_token().native_token
        soon: Callable[[Callable[[], object]], object]
        if isinstance(native, asyncio.AbstractEventLoop):
            soon = native.call_soon_threadsafe
        else:  # trio's TrioToken
            soon = getattr(native, "run_sync_soon")  # noqa: B009 - trio is optional
        self._soon = soon

    def wake(self) -> None:
        # RuntimeError: the loop is closed (asyncio) or the run has finished (trio)
        with contextlib.suppress(RuntimeError):
            self._soon(self._event.set)

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


async def wait_future(fut: Future[T]) -> T:
    """The result of a concurrent future; cancelling the awaiting task cancels the future."""
    waker = Waker()
    fut.add_done_callback(lambda _: waker.wake())
    try:
        await waker.wait()
    except BaseException:
        fut.cancel()
        raise
    try:
        return fut.result()
    except FutureCancelled:
        raise anyio.get_cancelled_exc_class()() from None


async def run_blocking(fn: Callable[[], T], *, interrupt: Callable[[], None] | None = None) -> T:
    """Run a blocking call in a worker thread. If the awaiting task is cancelled, `interrupt`
    is called (it must make `fn` return soon) and the thread is left to finish alone."""
    try:
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=_limiter())
    except BaseException:
        if interrupt is not None:
            interrupt()
        raise


_LIMITER: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("qsrv-waits")


def _limiter() -> anyio.CapacityLimiter:
    # anyio's default limiter admits 40 threads; qsrv's waits hold a thread for as long as the
    # remote work takes, so they get a roomier one of their own (one per event loop).
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(1024)
        _LIMITER.set(limiter)
        return limiter


# ---- asyncio-only coroutines (aiohttp) from anywhere -----------------------------------------
class _LoopThread:
    """qsrv's private asyncio loop, in a daemon thread started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="qsrv-loop", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop


_private_loop = _LoopThread()


def submit(async_fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
           ) -> Future[T]:
    """Start ``async_fn(*args, **kwargs)`` on qsrv's private asyncio loop."""
    return asyncio.run_coroutine_threadsafe(async_fn(*args, **kwargs), _private_loop.loop())


def call(async_fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run an asyncio coroutine function to completion from blocking code (also from a thread
    that runs an event loop of its own, as in Jupyter). Ctrl-C cancels it."""
    fut = submit(async_fn, *args, **kwargs)
    try:
        return fut.result()
    except BaseException:
        fut.cancel()
        raise


async def call_async(async_fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args,
                     **kwargs: P.kwargs) -> T:
    """Await an asyncio-only coroutine function from any async library."""
    if _running_asyncio():
        return await async_fn(*args, **kwargs)
    return await wait_future(submit(async_fn, *args, **kwargs))
