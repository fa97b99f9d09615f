"""Password guesses sent all at once get no more tries than guesses sent one after another, and
no number of failures breaks the back-off."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from qsrv.gateway import TooManyRequestsError, UnauthorizedError, add_user, set_password
from qsrv.gateway._throttle import LoginThrottle, ThrottleRules
from tests._support.gateway import ThreadedGateway


def test_concurrent_wrong_passwords_get_only_the_free_tries(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path) -> None:
    add_user(data_dir, "alice")
    set_password(data_dir, "alice", "correct horse battery")
    gateway = make_gateway(login_failures_per_user=2)
    service = gateway.server.service

    async def burst() -> list[BaseException | str]:
        # all started in one turn of the loop: each passes the throttle before any has failed
        return await asyncio.gather(
            *(service.login("alice", f"guess {i}", "127.0.0.1") for i in range(50)),
            return_exceptions=True)

    outcomes = gateway.call(burst())
    checked = [o for o in outcomes if isinstance(o, UnauthorizedError)]
    refused = [o for o in outcomes if isinstance(o, TooManyRequestsError)]
    assert len(checked) == 2 and len(refused) == 48, outcomes
    # then, as after two guesses one by one: a third is checked, and alice is backed off
    with pytest.raises(UnauthorizedError):
        gateway.call(service.login("alice", "guess 50", "127.0.0.1"))
    with pytest.raises(TooManyRequestsError):
        gateway.call(service.login("alice", "correct horse battery", "127.0.0.1"))


def test_a_correct_password_in_a_burst_still_logs_in() -> None:
    throttle = LoginThrottle(ThrottleRules(1), ThrottleRules(20), clock=lambda: 0.0)
    throttle.begin("alice", "10.0.0.1")
    with pytest.raises(TooManyRequestsError):
        throttle.begin("alice", "10.0.0.2")  # one try left for alice: it is in flight
    throttle.end("alice", "10.0.0.1")
    throttle.succeeded("alice")
    throttle.begin("alice", "10.0.0.1")  # nothing held any more
    throttle.end("alice", "10.0.0.1")


def test_thousands_of_failures_keep_the_back_off() -> None:
    now = [0.0]
    throttle = LoginThrottle(ThrottleRules(5, max_s=300.0), ThrottleRules(20, max_s=300.0),
                             clock=lambda: now[0])
    for _ in range(1200):  # e.g. recorded by a burst of attempts
        throttle.failed("alice", "10.0.0.1")
    for _ in range(3):
        with pytest.raises(TooManyRequestsError) as caught:
            throttle.check("alice", "10.0.0.1")
        assert caught.value.retry_after == 300
        now[0] += 301  # the lock ends; the next failure locks again, for the longest
        throttle.check("alice", "10.0.0.1")
        throttle.failed("alice", "10.0.0.1")
