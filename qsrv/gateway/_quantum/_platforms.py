"""The platforms the cluster's workers offer, as the quantum service sees them.

- Read from the cluster's status at most every ``platforms_ttl_s`` (``QuantumConfig``).
- A platform not offered (and the listing) is waited for, at most ``probe_wait_s``, while the
  cluster may still come to offer more: a connected worker's engine probe has not reported
  yet, or no worker has connected since the service started. A worker that stays silent
  through a whole wait is not waited for again. So a session or batch asked for, or the
  platforms listed, right after the gateway (or a worker) starts find what the workers offer;
  on a settled cluster nothing waits (an unknown name is refused at once).
- Each platform's last seen spec is kept: a session's platform whose workers went away still
  validates jobs (they wait for a worker).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from qsrv.errors import NotFoundError

if TYPE_CHECKING:
    from qsrv.gateway._quantum._runner import ClusterDriver
    from qsrv.gateway._quantum._service import QuantumConfig
    from qsrv.quantum.engines import Platform

__all__ = ["Platforms"]


class Platforms:
    def __init__(self, cluster: ClusterDriver, config: Callable[[], QuantumConfig]) -> None:
        self._cluster = cluster
        self._config = config  # read at each use: the service's config may be replaced
        self._read: tuple[float, list[Platform]] = (-math.inf, [])
        self._known: dict[str, Platform] = {}  # last seen spec of each platform
        self._unprobed: set[str] = set()  # workers whose engine probe had not reported
        self._workers = 0  # workers connected at the last read
        self._silent: set[str] = set()  # workers that stayed unprobed through a whole wait
        self._started_at = -math.inf

    def started(self) -> None:
        """The service starts: workers that have not connected yet are waited for."""
        self._started_at = asyncio.get_running_loop().time()

    async def offered(self, max_age: float | None = None) -> list[Platform]:
        """What the workers offer now (a read at most ``max_age`` s old, by default
        ``platforms_ttl_s``)."""
        at, found = self._read
        loop = asyncio.get_running_loop()
        if loop.time() - at < (self._config().platforms_ttl_s if max_age is None else max_age):
            return list(found)
        from qsrv.quantum import engines

        status = await self._cluster.status()
        found = list(engines.platforms(status))
        workers = [w for w in status.get("workers") or () if isinstance(w, dict)]
        self._workers = len(workers)
        self._unprobed = {str(w.get("id")) for w in workers
                          if not isinstance((w.get("info") or {}).get("quantum"), dict)}
        self._read = (loop.time(), found)
        self._known.update((p.name, p) for p in found)
        return list(found)

    async def settled(self) -> list[Platform]:
        """What the workers offer once nothing more may come soon (as the module says)."""
        return await self._until(lambda found: False)

    async def get(self, name: str) -> Platform:
        """The platform ``name``, waited for as the module says; NotFoundError if none."""
        found = await self._until(lambda found: any(p.name == name for p in found))
        for each in found:
            if each.name == name:
                return each
        names = sorted(p.name for p in found)
        raise NotFoundError(f"no platform {name!r} on this cluster"
                            + (f"; it offers {', '.join(names)}" if names else
                               "; no worker offers any platform now"))

    def last_seen(self, name: str) -> Platform | None:
        """The platform's spec when it was last offered (None if it never was)."""
        return self._known.get(name)

    async def _until(self, enough: Callable[[list[Platform]], bool]) -> list[Platform]:
        """What is offered once ``enough`` of it, or once no worker may still report (each
        connected one has, and one has connected or the start is ``probe_wait_s`` past), or
        after ``probe_wait_s``."""
        loop = asyncio.get_running_loop()
        wait_s = self._config().probe_wait_s
        deadline = loop.time() + wait_s
        delay, max_age = 0.05, None  # the first look may use a recent read
        while True:
            found = await self.offered(max_age)
            now = loop.time()
            waiting = self._unprobed - self._silent
            starting = not self._workers and now < self._started_at + wait_s
            if enough(found) or not (waiting or starting):
                return found
            if now >= deadline:
                self._silent |= waiting  # not waited for again
                return found
            await asyncio.sleep(min(delay, deadline - now))
            max_age, delay = delay, min(delay * 2, 0.5)
