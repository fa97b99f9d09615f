"""The one way a test waits for something it cannot be told about: poll a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.05) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    Fails the test (AssertionError naming ``what``) once ``timeout`` seconds have passed. The
    timeout only bounds a hang: it is generous, and no test may depend on its value.
    Exceptions from ``predicate`` propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
