"""Waiting and retrying: deadlines, exponential back-off with an overall deadline, polling.

- ``Deadline(timeout)``: a point ``timeout`` seconds ahead on a monotonic clock (``None``:
  never). ``remaining()`` is never negative (``math.inf`` without a deadline).
- ``Backoff``: the pauses between tries of something that fails -- ``initial``, then each
  ``factor`` times the last, at most ``cap``; with ``jitter`` each pause is drawn uniformly from
  [0, that] ("full jitter": many clients retrying after one outage spread out). With a
  ``timeout`` no pause ends past the deadline, so the last try lands on it, and once it has
  passed there is no next pause: give up. ``reset()`` after a success starts over.
- ``poll_until`` / ``poll_until_async``: ask ``condition()`` every ``interval`` seconds until it
  answers something truthy or the timeout passes; it is asked once more at the deadline.

Every clock is injectable (``clock=``) so that tests need not sleep.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Backoff", "Deadline", "poll_until", "poll_until_async"]

T = TypeVar("T")


class Deadline:
    """``timeout`` seconds from now (or from the last ``restart()``); ``None`` never passes."""

    __slots__ = ("_at", "_clock", "timeout")

    def __init__(self, timeout: float | None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._at = math.inf
        self.restart()

    def restart(self) -> None:
        self._at = math.inf if self.timeout is None else self._clock() + self.timeout

    def remaining(self) -> float:
        """Seconds left, >= 0; ``math.inf`` without a deadline."""
        return max(0.0, self._at - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


class Backoff:
    """Pauses between retries: exponential from ``initial`` up to ``cap``, optionally jittered,
    within an overall ``timeout`` (``None``: retry forever).

    ``next_delay()`` gives the next pause, shortened so that it ends on the deadline at the
    latest, or ``None`` once the deadline has passed. ``sleep()``/``sleep_async()`` wait for it
    and say whether to try again.
    """

    def __init__(self, initial: float = 0.1, cap: float = 5.0, factor: float = 2.0, *,
                 jitter: bool = False, timeout: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random) -> None:
        if initial < 0 or cap < initial or factor < 1:
            raise ValueError(f"need 0 <= initial <= cap and factor >= 1, got "
                             f"initial={initial}, cap={cap}, factor={factor}")
        self.initial, self.cap, self.factor, self.jitter = initial, cap, factor, jitter
        self.deadline = Deadline(timeout, clock=clock)
        self._rng = rng
        self._delay = initial
        self.attempts = 0  # pauses given since the last reset

    def reset(self) -> None:
        """Start over: the first pause again, and a new deadline."""
        self._delay = self.initial
        self.attempts = 0
        self.deadline.restart()

    def next_delay(self) -> float | None:
        left = self.deadline.remaining()
        if left <= 0.0:
            return None
        delay = self._delay
        self._delay = min(self._delay * self.factor, self.cap)
        self.attempts += 1
        if self.jitter:
            delay *= self._rng()
        return min(delay, left)

    def sleep(self) -> bool:
        """Sleep the next pause; False (at once) when the deadline has passed."""
        delay = self.next_delay()
        if delay is None:
            return False
        time.sleep(delay)
        return True

    async def sleep_async(self) -> bool:
        """``sleep`` for a coroutine."""
        delay = self.next_delay()
        if delay is None:
            return False
        await asyncio.sleep(delay)
        return True


def poll_until(condition: Callable[[], T], timeout: float | None, interval: float = 0.05, *,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], object] = time.sleep) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy, and
    return that; after ``timeout`` seconds return its last (falsy) answer instead. It is
    called at least once, and once more at the deadline."""
    deadline = Deadline(timeout, clock=clock)
    while True:
        result = condition()
        left = deadline.remaining()
        if result or left <= 0.0:
            return result
        sleep(min(interval, left))


async def poll_until_async(condition: Callable[[], T], timeout: float | None,
                           interval: float = 0.05, *,
                           clock: Callable[[], float] = time.monotonic) -> T:
    """``poll_until`` for a coroutine: the pauses do not block the event loop."""
    deadline = Deadline(timeout, clock=clock)
    while True:
        result = condition()
        left = deadline.remaining()
        if result or left <= 0.0:
            return result
        await asyncio.sleep(min(interval, left))
