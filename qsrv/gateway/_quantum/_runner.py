"""The gateway as a driver of its cluster: reservations for sessions, tasks for quantum jobs.

The gateway holds the cluster token, so it connects as a driver (``qsrv.client.init``) the first
time the quantum service needs the cluster. A process has one driver runtime: when one is
already installed for the same cluster (a gateway run inside a test or a script that joined
the cluster first), it is used as it is and left installed at close; one the gateways of this
process installed is shut down when the last of them closes.

A running session holds a reservation of its platform's target (``qsrv.reserve``) and its jobs
run as tasks inside it (``.options(reservation=...)``): nothing else uses that capacity, and the
executor serving it stays warm between jobs. ``Holding`` wraps the reservation; ``run`` is the
one function that submits a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qsrv.client import (
    ObjectRef,
    Reservation,
    cancel,
    cluster_status,
    connected,
    distribute_task,
    get_async,
    init,
    is_initialized,
    reserve,
    shutdown,
)
from qsrv.errors import GatewayUnavailableError, QsrvError

__all__ = ["ClusterDriver", "Holding", "JobRun", "execute_job"]

_log = logging.getLogger("qsrv.gateway")
# Drivers the gateways of this process installed: address -> how many gateways use it.
_INSTALLED: dict[str, int] = {}


def execute_job(kind: str, data: str, shots: int, variables: dict[str, Any], platform: str,
                seed: int | None, options: dict[str, Any] | None
                ) -> tuple[dict[str, int], str | None]:
    """The task a quantum job runs on a worker: the engine's counts and native result."""
    from qsrv.quantum import engines

    result = engines.execute(engines.Program(kind, data), shots, variables, platform=platform,
                             seed=seed, options=options)
    return dict(result.counts), result.native


_EXECUTE = distribute_task(max_retries=1, name="quantum-job")(execute_job)


@dataclass(frozen=True, slots=True)
class JobRun:
    """What a job needs on the worker."""

    job_id: str
    kind: str
    data: str
    shots: int
    variables: dict[str, Any]
    platform: str
    seed: int | None
    options: dict[str, Any] | None


class Holding:
    """A session's hold on its platform's capacity: its reservation."""

    def __init__(self, target: Mapping[str, float], name: str) -> None:
        self.target = dict(target)
        self.reservation: Reservation = reserve(self.target, name=name)

    @property
    def id(self) -> str:
        return str(self.reservation.id)

    @property
    def released(self) -> bool:
        return self.reservation.status == "released"

    @property
    def lost(self) -> bool:
        """Released (by its holder's disconnection, say) or infeasible: jobs cannot run in it."""
        return self.reservation.status in ("released", "infeasible")

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until the reservation is placed; raises ReservationError (infeasible, released)
        with its reason."""
        await self.reservation.wait_async(timeout=timeout)

    def submit(self, run: JobRun) -> ObjectRef:
        """The job as a task inside the reservation (the one place a job is submitted)."""
        fn = _EXECUTE.options(reservation=self.reservation, name=f"quantum-job {run.job_id}")
        ref: ObjectRef = fn(run.kind, run.data, run.shots, run.variables, run.platform,
                            run.seed, run.options)
        return ref

    def release(self) -> None:
        with contextlib.suppress(QsrvError, OSError):
            self.reservation.release()


class ClusterDriver:
    """The gateway's driver connection, made on first use (in a thread: it blocks)."""

    def __init__(self, address: str | None, token: str | None) -> None:
        self.address = address
        self._token = token
        self._lock = asyncio.Lock()
        self._owned = False
        self._ready = False

    @property
    def configured(self) -> bool:
        return bool(self.address)

    async def connect(self) -> None:
        if self._ready:
            return
        if not self.address:
            raise GatewayUnavailableError(
                "this gateway has no cluster (start it with --cluster ADDRESS): quantum jobs "
                "cannot run")
        async with self._lock:
            if self._ready:
                return
            if is_initialized():
                driver = connected().driver
                if driver is None or driver.address != self.address:
                    raise GatewayUnavailableError(
                        "this process is already a driver of another cluster "
                        f"({getattr(driver, 'address', 'an executor')}), not of the gateway's "
                        f"({self.address})")
                if self.address in _INSTALLED:  # another gateway of this process made it
                    _INSTALLED[self.address] += 1
                    self._owned = True
            else:
                try:
                    await asyncio.to_thread(init, self.address, self._token or "")
                except QsrvError as exc:
                    raise GatewayUnavailableError(
                        f"cannot reach the cluster at {self.address}: {exc}") from exc
                _INSTALLED[self.address] = 1
                self._owned = True
            self._ready = True

    async def status(self) -> dict[str, Any]:
        await self.connect()
        try:
            return await asyncio.to_thread(cluster_status, 10.0)
        except QsrvError as exc:
            raise GatewayUnavailableError(
                f"cannot read the cluster's status at {self.address}: {exc}") from exc

    async def result(self, ref: ObjectRef) -> tuple[dict[str, int], str | None]:
        counts, native = await get_async(ref)
        return counts, native

    def cancel(self, ref: ObjectRef) -> None:
        with contextlib.suppress(QsrvError, OSError):
            cancel(ref)

    async def close(self) -> None:
        """Disconnect, if the driver was made by gateways of this process and this is the
        last of them."""
        if self._owned:
            self._owned = False
            self._ready = False
            assert self.address is not None
            _INSTALLED[self.address] -= 1
            if not _INSTALLED[self.address]:
                del _INSTALLED[self.address]
                await asyncio.to_thread(shutdown)
