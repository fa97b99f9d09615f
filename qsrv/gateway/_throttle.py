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
- Attempts in flight count (``begin`` ... ``end``): a key allows at once only the failures it
  has left before back-off (at least one), so concurrent guesses get no more tries than guesses
  one after another would.
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
    __slots__ = ("failures", "last", "locked_until", "pending")

    def __init__(self) -> None:
        self.failures = 0
        self.locked_until = 0.0
        self.last = 0.0
        self.pending = 0  # attempts begun and not ended


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

    def begin(self, user: str, address: str) -> None:
        """``check``, then hold one attempt for both keys until ``end``; TooManyRequestsError
        when a key has as many attempts in flight as failures left before back-off."""
        self.check(user, address)
        now = self.clock()
        keys = (("user", user), ("address", address))
        for key in keys:
            record = self._live(key, now)
            if record is not None and record.pending >= max(
                    1, self.rules[key[0]].free - record.failures):
                err = TooManyRequestsError(f"too many logins at once for this {key[0]}; "
                                           "try again in a moment")
                err.retry_after = 1
                raise err
        for key in keys:
            record = self._touch(key, now)
            record.pending += 1

    def end(self, user: str, address: str) -> None:
        """An attempt ``begin`` held is over (report its outcome with ``failed`` or
        ``succeeded``)."""
        for key in (("user", user), ("address", address)):
            record = self._records.get(key)
            if record is not None and record.pending > 0:
                record.pending -= 1

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        for kind, name in (("user", user), ("address", address)):
            record = self._touch((kind, name), now)
            record.failures += 1
            rules = self.rules[kind]
            over = record.failures - rules.free
            if over > 0:  # (the exponent capped: 2.0 ** 1100 is no float)
                back_off = rules.base_s * 2.0 ** min(over - 1, 64)
                record.locked_until = now + min(rules.max_s, back_off)

    def succeeded(self, user: str) -> None:
        self._records.pop(("user", user), None)

    def _touch(self, key: tuple[str, str], now: float) -> _Record:
        """The key's record (a new one if it had none), marked as used now."""
        record = self._live(key, now) or _Record()
        self._records[key] = record
        self._records.move_to_end(key)
        record.last = now
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)
        return record

    def _live(self, key: tuple[str, str], now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last > self.rules[key[0]].forget_s \
                and record.locked_until <= now and not record.pending:
            del self._records[key]
            return None
        return record
