"""Password-login throttling: failed attempts per user name and per client address, with
back-off. Pure bookkeeping with an injectable clock; the service consults it before checking a
password (so a throttled guess costs no scrypt) and reports each outcome.

Rules, per key (a user name, and separately an address):

- ``free`` failures are allowed; each failure after them locks the key for a back-off that
  doubles (``base_s``, 2x, 4x, ... at most ``max_s``). An attempt while locked is refused
  without checking the password (TooManyRequestsError, with the seconds left).
- A success clears the user's record (not the address's: an address guessing many names stays
  slowed down). A key with no failure for ``forget_s`` is forgotten.
- At most ``max_keys`` keys are kept (the oldest are dropped first), so a flood of made-up
  names cannot grow memory without bound.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from qsrv.gateway._errors import TooManyRequestsError

__all__ = ["LoginThrottle", "ThrottleRules"]


@dataclass(frozen=True, slots=True)
class ThrottleRules:
    free: int  # failures before back-off starts
    base_s: float = 1.0
    max_s: float = 300.0
    forget_s: float = 900.0


class _Record:
    __slots__ = ("failures", "last", "locked_until")

    def __init__(self) -> None:
        self.failures = 0
        self.locked_until = 0.0
        self.last = 0.0


class LoginThrottle:
    def __init__(self, per_user: ThrottleRules, per_address: ThrottleRules, *,
                 max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = {"user": per_user, "address": per_address}
        self.max_keys = max_keys
        self.clock = clock
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    def check(self, user: str, address: str) -> None:
        """Refuse (TooManyRequestsError) while the user or the address is backed off."""
        now = self.clock()
        wait = 0.0
        for key in (("user", user), ("address", address)):
            record = self._live(key, now)
            if record is not None and record.locked_until > now:
                wait = max(wait, record.locked_until - now)
        if wait > 0:
            err = TooManyRequestsError(
                f"too many failed logins; try again in {math.ceil(wait)} s")
            err.retry_after = math.ceil(wait)
            raise err

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        for kind, name in (("user", user), ("address", address)):
            key = (kind, name)
            record = self._live(key, now) or _Record()
            self._records[key] = record
            self._records.move_to_end(key)
            record.failures += 1
            record.last = now
            rules = self.rules[kind]
            over = record.failures - rules.free
            if over > 0:
                record.locked_until = now + min(rules.max_s, rules.base_s * 2 ** (over - 1))
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)

    def succeeded(self, user: str) -> None:
        self._records.pop(("user", user), None)

    def _live(self, key: tuple[str, str], now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last > self.rules[key[0]].forget_s \
                and record.locked_until <= now:
            del self._records[key]
            return None
        return record
