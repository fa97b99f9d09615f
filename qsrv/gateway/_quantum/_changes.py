"""Waits woken by the change itself: a waiter on an object's id (a session, batch or job)
sleeps on an ``asyncio.Event`` of that id, which the service sets once it has stored a change
of the object; the waiter then reads the object again. Nothing polls. Event-loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Changes"]

_R = TypeVar("_R")


class Changes:
    """``await wait(key, read, done, timeout)`` until ``done(read())``; ``notify(key)``."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    async def wait(self, key: str, read: Callable[[], _R], done: Callable[[_R], bool],
                   timeout: float | None) -> _R:
        """``read()`` once ``done`` holds of it, or as it is after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + max(0.0, float(timeout))
        while True:
            record = read()
            if done(record):
                return record
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return record
            event = self._events.setdefault(str(key), asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                return read()

    def notify(self, *keys: str | None) -> None:
        """These objects changed (and the change is stored): wake their waiters."""
        for key in keys:
            if key is not None and (event := self._events.pop(key, None)) is not None:
                event.set()
