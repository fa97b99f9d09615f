"""Reservations: capacity held on one worker for this driver, and the tasks run inside it.

    r = qsrv.reserve({"cpu": 1, "gpu": 1}, name="session")   # returns at once
    r.wait(timeout=60)                                          # until it is ready
    ref = simulate.options(reservation=r)(circuit)             # runs only inside r
    r.release()                                                 # or: the driver disconnects

The scheduler keeps the reservation (qsrv/scheduler/_reservations.py) and pushes each change of
its status; this object mirrors it. Executors that run its tasks are dedicated to it and stay
alive until it is released, so module-level caches survive from one of its tasks to the next.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import anyio

from qsrv import _bridge, _resources
from qsrv.client._api import connected
from qsrv.client._core import ClientCore
from qsrv.errors import ConfigError, GetTimeoutError, ReservationError

STATUSES = ("pending", "ready", "infeasible", "released")


class Reservation:
    """Capacity held on one worker. ``status``: "pending" (waiting for room), "ready" (held on
    ``worker``), "infeasible" (no connected worker could ever hold it; ``reason`` says why; it
    becomes pending again if one joins) or "released" (final; ``reason`` says why)."""

    def __init__(self, core: ClientCore | None, rid: int, resources: dict[str, int],
                 name: str | None) -> None:
        self._core = core
        self._rid = rid
        self._resources = resources
        self.id = f"{rid:016x}"
        self.name = name
        self.target: dict[str, float | str] = _resources.display(resources)
        self.status = "pending"
        self.reason: str | None = None
        self.worker: str | None = None
        self._changed = threading.Condition()
        self._wakers: list[_bridge.Waker] = []

    # ---- what the scheduler says (the transport's thread) -----------------------------------
    def _update(self, status: str, worker: str, reason: str) -> None:
        with self._changed:
            if self.status == "released":
                return
            self.status = status
            self.worker = worker or None
            self.reason = reason or None
            self._changed.notify_all()
            wakers, self._wakers = self._wakers, []
        for waker in wakers:
            waker.wake()

    # ---- waiting -----------------------------------------------------------------------------
    def _outcome(self) -> Reservation | None:
        """Self when ready; raises when it cannot become ready; None while pending."""
        status = self.status
        if status == "ready":
            return self
        if status in ("infeasible", "released"):
            raise ReservationError(f"reservation {self.id}{self._named()} is {status}: "
                                   f"{self.reason}", self.reason)
        return None

    def wait(self, timeout: float | None = None) -> Reservation:
        """Block until it is ready; ReservationError if it is (or turns) infeasible or is
        released, GetTimeoutError when ``timeout`` seconds pass first."""
        self._attached("wait")
        with self._changed:
            ready = self._changed.wait_for(lambda: self.status != "pending", timeout)
            if not ready:
                raise GetTimeoutError(f"reservation {self.id}{self._named()} was not ready "
                                      f"within {timeout:g} s")
            result = self._outcome()
        assert result is not None
        return result

    async def wait_async(self, timeout: float | None = None) -> Reservation:
        """`wait` for async code (asyncio or trio)."""
        self._attached("wait_async")
        with anyio.move_on_after(timeout):
            while True:
                with self._changed:
                    result = self._outcome()
                    if result is not None:
                        return result
                    waker = _bridge.Waker()
                    self._wakers.append(waker)
                await waker.wait()
        raise GetTimeoutError(f"reservation {self.id}{self._named()} was not ready within "
                              f"{timeout:g} s")

    def release(self) -> None:
        """Give the capacity back: its executors stop, its unfinished tasks fail with
        ReservationError. Idempotent."""
        core = self._attached("release")
        with self._changed:
            if self.status == "released":
                return
        core.release(self._rid)
        self._update("released", "", "released by its holder")

    # ---- helpers -------------------------------------------------------------------------------
    def _attached(self, what: str) -> ClientCore:
        if self._core is None:
            raise ConfigError(f"{what}() is for the driver that holds the reservation; this "
                              "is a copy of it (passed to a task)")
        return self._core

    def _named(self) -> str:
        return f" ({self.name!r})" if self.name else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy (in a task's arguments) still names it: tasks submitted with it run inside.
        return _detached, (self._rid, self._resources, self.name)

    def __repr__(self) -> str:
        where = f" on {self.worker}" if self.worker else ""
        return (f"<qsrv.Reservation {self.id}{self._named()} {self.status}{where} "
                f"target={self.target}>")


def _detached(rid: int, resources: dict[str, int], name: str | None) -> Reservation:
    return Reservation(None, rid, resources, name)


def reserve(target: Mapping[str, Any], *, name: str | None = None,
            timeout: float | None = None) -> Reservation:
    """Hold ``target`` (resource names to amounts, as a task's target; no default CPU) on one
    worker until `Reservation.release()` or this driver disconnects. Returns at once, pending;
    `Reservation.wait()` waits until it is ready. ``timeout``: seconds it may take to become
    ready; past them it is released with the reason. Tasks run inside it with
    ``f.options(reservation=r)``; nothing else uses its capacity."""
    resources = _resources.normalize(target)
    if not resources:
        raise ConfigError(f"a reservation needs a non-empty target, got {dict(target)!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout <= 0):
        raise ConfigError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"name must be a string or None, got {name!r}")
    runtime = connected()
    if runtime.driver is None:
        raise ConfigError("reserve() is for drivers: inside a task, pass a reservation made by "
                          "the driver instead")
    holder: list[Reservation] = []
    early: list[tuple[str, str, str]] = []
    guard = threading.Lock()

    def on_update(status: str, worker: str, reason: str) -> None:
        with guard:
            if not holder:  # before the object below exists (the reader thread is quick)
                early.append((status, worker, reason))
                return
        holder[0]._update(status, worker, reason)

    core = runtime.core
    rid = core.reserve(resources, name or "", float(timeout or 0.0), on_update)
    res = Reservation(core, rid, resources, name)
    with guard:
        holder.append(res)
        for update in early:
            res._update(*update)
    return res
