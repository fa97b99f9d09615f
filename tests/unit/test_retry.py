"""qsrv._retry: deadlines, back-off and polling, on a fake clock (nothing sleeps for real)."""

from __future__ import annotations

import asyncio
import math

import pytest

from qsrv._retry import Backoff, Deadline, poll_until, poll_until_async


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_deadline_counts_down_and_never_goes_negative() -> None:
    clock = Clock()
    d = Deadline(2.0, clock=clock)
    assert d.remaining() == 2.0 and not d.expired()
    clock.now += 1.5
    assert d.remaining() == pytest.approx(0.5)
    clock.now += 1.0
    assert d.remaining() == 0.0 and d.expired()
    d.restart()
    assert d.remaining() == 2.0


def test_no_deadline_never_expires() -> None:
    d = Deadline(None)
    assert d.remaining() == math.inf and not d.expired()
    assert Deadline(0).expired()


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.1, cap=0.5)
    assert [b.next_delay() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert b.attempts == 5
    b.reset()
    assert b.next_delay() == pytest.approx(0.1) and b.attempts == 1
    assert [Backoff(1, cap=10, factor=3).next_delay() for _ in range(2)] == [1, 1]
    three = Backoff(1, cap=10, factor=3)
    assert [three.next_delay() for _ in range(3)] == [1, 3, 9]


def test_backoff_never_sleeps_past_its_deadline_then_gives_up() -> None:
    clock = Clock()
    b = Backoff(1.0, cap=4.0, timeout=6.0, clock=clock)
    slept = []
    while (delay := b.next_delay()) is not None:
        slept.append(delay)
        clock.sleep(delay)
    assert slept == [1.0, 2.0, 3.0]  # the last pause is cut to end on the deadline
    assert clock.now == 106.0
    b.reset()  # a success: a new deadline
    assert b.next_delay() == 1.0


def test_zero_timeout_gives_up_at_once() -> None:
    assert Backoff(timeout=0).next_delay() is None
    assert Backoff(timeout=0).sleep() is False


def test_full_jitter_draws_within_zero_and_the_delay() -> None:
    draws = iter([0.0, 0.5, 0.999])
    b = Backoff(1.0, cap=8.0, jitter=True, rng=lambda: next(draws))
    assert [b.next_delay() for _ in range(3)] == pytest.approx([0.0, 1.0, 3.996])
    real = Backoff(1.0, cap=1.0, jitter=True)
    assert all(0.0 <= (real.next_delay() or 0.0) < 1.0 for _ in range(100))


def test_bad_parameters_are_refused() -> None:
    for kwargs in ({"initial": -1.0}, {"initial": 2.0, "cap": 1.0}, {"factor": 0.5}):
        with pytest.raises(ValueError):
            Backoff(**kwargs)  # type: ignore[arg-type]


def test_sleep_waits_and_says_whether_to_retry() -> None:
    b = Backoff(0.001, cap=0.001, timeout=0.05)
    tries = 0
    while b.sleep():
        tries += 1
    assert tries >= 2 and b.deadline.expired()

    async def main() -> int:
        b = Backoff(0.001, cap=0.001, timeout=0.05)
        n = 0
        while await b.sleep_async():
            n += 1
        return n

    assert asyncio.run(main()) >= 2


def test_poll_until_returns_the_first_truthy_answer() -> None:
    clock = Clock()
    answers = iter([None, 0, "ready", "later"])
    assert poll_until(lambda: next(answers), 10, 0.5, clock=clock, sleep=clock.sleep) == "ready"
    assert clock.sleeps == [0.5, 0.5]


def test_poll_until_asks_once_more_at_the_deadline_then_returns_the_falsy_answer() -> None:
    clock = Clock()
    calls: list[float] = []

    def never() -> list[int]:
        calls.append(clock.now)
        return []

    assert poll_until(never, 1.0, 0.4, clock=clock, sleep=clock.sleep) == []
    assert calls == pytest.approx([100.0, 100.4, 100.8, 101.0])
    calls.clear()
    assert poll_until(never, 0, 0.4, clock=clock, sleep=clock.sleep) == []
    assert len(calls) == 1


def test_poll_until_async() -> None:
    answers = iter([False, False, True])
    assert asyncio.run(poll_until_async(lambda: next(answers), 5, 0.001)) is True
    assert asyncio.run(poll_until_async(lambda: 0, 0.01, 0.001)) == 0
