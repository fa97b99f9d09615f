"""Following the scheduler as a monitor: a blocking client of the ``monitor`` role, and the
feed a dashboard keeps from its updates (bounded).

`MonitorClient` is a plain socket client (what `qsrv timeline` needs: one request, one
reply). `Feed` runs one in a thread, following the scheduler every `interval` seconds, and
hands each update to the event loop that owns it; it keeps the latest status, the recent task
events (at most `max_events`), the recent failures with their traceback text, and rates.
When the scheduler goes away it reconnects, with back-off, and says so in `error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from qsrv.dashboard._errors import error_text
from qsrv.errors import ConnectionLostError, GetTimeoutError, ProtocolError
from qsrv.protocol import MonitorRequest, MonitorUpdate
from qsrv.transport import SyncConnection

__all__ = ["Feed", "MonitorClient"]

log = logging.getLogger("qsrv.dashboard")


class MonitorClient:
    """A read-only connection to the scheduler (role ``monitor``, the cluster token)."""

    def __init__(self, address: str, token: str, *, timeout: float = 10.0) -> None:
        self.address = address
        self._conn = SyncConnection(address, token, "monitor", timeout=timeout)
        self._ids = itertools.count(1)

    def request(self, since: float = 0.0, follow: float = 0.0) -> int:
        req_id = next(self._ids)
        self._conn.send([MonitorRequest(req_id, float(since), float(follow))])
        return req_id

    def receive(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """The updates that came (blocks until one does, or `timeout` passes)."""
        return [m.update for m in self._conn.receive(timeout) if type(m) is MonitorUpdate]

    def snapshot(self, since: float = 0.0, timeout: float = 10.0) -> dict[str, Any]:
        """One update: the status and what the scheduler keeps since ``since``."""
        self.request(since)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            updates = self.receive(left)
            if updates:
                return updates[0]
        raise GetTimeoutError(f"no answer from the scheduler at {self.address} within "
                              f"{timeout:g} s")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> MonitorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Feed:
    """The dashboard's view of the scheduler, kept from a monitor connection's updates."""

    def __init__(self, address: str, token: str, *, interval: float = 0.5,
                 max_events: int = 5000, max_failures: int = 100) -> None:
        self.address = address
        self._token = token
        self.interval = interval
        self.latest: dict[str, Any] | None = None
        self.events: deque[list[Any]] = deque(maxlen=max_events)
        self.failures: deque[dict[str, Any]] = deque(maxlen=max_failures)
        self.error = ""
        self.updates = 0
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: MonitorClient | None = None
        self._rates: deque[tuple[float, int, int]] = deque(maxlen=32)

    def listen(self, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``fn(update)`` on the loop for each update; returns the way to stop."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="qsrv-dashboard-feed",
                                        daemon=True)
        self._thread.start()

    async def first(self, timeout: float = 10.0) -> None:
        """Wait for the first update (or its error)."""
        deadline = time.monotonic() + timeout
        while self.latest is None and not self.error and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            client.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                self._client = MonitorClient(self.address, self._token)
                self._client.request(0.0, self.interval)
                delay = 0.2
                while not self._stop.is_set():
                    for update in self._client.receive(1.0):
                        self._deliver(update)
            except (ConnectionLostError, ProtocolError, OSError) as exc:
                if self._stop.is_set():
                    return
                self._set_error(f"scheduler at {self.address} unreachable: {exc}")
            finally:
                if self._client is not None:
                    with contextlib.suppress(Exception):
                        self._client.close()
                    self._client = None
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _set_error(self, text: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._apply_error, text)

    def _apply_error(self, text: str) -> None:
        self.error = text
        for fn in list(self._listeners):
            fn({"error": text})

    def _deliver(self, update: dict[str, Any]) -> None:
        failures = [_failure(f) for f in update.pop("failures", [])]
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._apply, update, failures)

    def _apply(self, update: dict[str, Any], failures: list[dict[str, Any]]) -> None:
        self.error = ""
        self.updates += 1
        self.events.extend(update.get("events", []))
        self.failures.extend(failures)
        totals = update.get("totals", {})
        self._rates.append((update.get("now", time.time()), totals.get("submitted", 0),
                            totals.get("done", 0) + totals.get("failed", 0)))
        update["failures"] = failures
        update["rates"] = self.rates()
        self.latest = update
        for fn in list(self._listeners):
            fn(update)

    def rates(self) -> dict[str, float]:
        """Tasks a second, submitted and finished, over the last few updates."""
        if len(self._rates) < 2:
            return {"submitted": 0.0, "finished": 0.0}
        (t0, s0, f0), (t1, s1, f1) = self._rates[max(0, len(self._rates) - 6)], self._rates[-1]
        dt = max(t1 - t0, 1e-9)
        return {"submitted": round((s1 - s0) / dt, 2), "finished": round((f1 - f0) / dt, 2)}


def _failure(f: list[Any]) -> dict[str, Any]:
    """A failure as the monitor sends it: [at, task id, function, worker id, pid, error,
    kind, reason] (the error a pickle's bytes, read without unpickling; none when the
    scheduler decided the failure: the reason says why)."""
    kind = f[6] if len(f) > 6 else "error"
    reason = f[7] if len(f) > 7 else ""
    error = f[5]
    text = error_text(error) if error else ""
    if reason and text:
        text = f"{reason}\n\n{text}"
    return {"at": f[0], "task_id": f[1], "function": f[2], "worker": f[3], "pid": f[4],
            "kind": kind, "reason": reason, "traceback": text or reason or "(no text)"}
