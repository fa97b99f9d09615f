"""A session's loop: hold its reservation, run its jobs in order, stop it when its time is up.

One ``SessionLoop`` (an asyncio task) per active session. It only runs things; every state
change goes through the service (``job_started``, ``job_ended``, ``session_expired``...), which
also stops the loop (``stop``) when the session ends for any reason.

- Starting: the platform's spec (its target) is read, the reservation asked for and waited on;
  while the cluster cannot be reached or lists no worker for the platform, it tries again with
  a back-off. A reservation no worker can ever hold stops the session (``infeasible``).
- Running: the first PENDING job (lowest ``seq``) runs as a task inside the reservation; the
  loop waits for its result, for a wake-up (a new job, a cancel) or for the session's next
  deadline (max duration, idle), whichever comes first -- never a polling sleep.
- A job whose reservation was lost (its holder's connection broke, e.g. the scheduler
  restarted) goes back to PENDING and runs again in a new reservation.
- Stopping (``stop``): with no job running, the reservation is released at once and the
  service marks the session stopped. With a job running, the session stays ``stopping``: the
  job's task is cancelled, the loop waits for it to end (at most ``stop_grace_s``), then
  releases the reservation; its end (``loop_ended``) lets the service mark it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING

from qsrv.errors import (
    ConnectionLostError,
    GatewayError,
    GetTimeoutError,
    QsrvError,
    ReservationError,
    TaskCancelledError,
)
from qsrv.gateway._quantum._models import QJobRecord, QResult, StopReason
from qsrv.gateway._quantum._runner import Holding, JobRun

if TYPE_CHECKING:
    from qsrv.client import ObjectRef
    from qsrv.gateway._quantum._service import QuantumService

__all__ = ["SessionLoop"]

_log = logging.getLogger("qsrv.gateway")
_RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_ERROR_MAX = 4000  # characters of a job's error kept
_LOST = "its reservation was lost"
_MAX_LOST = 3  # a job whose reservation is lost this many times ends in ERROR


class SessionLoop:
    def __init__(self, service: QuantumService, session_id: str) -> None:
        self.service = service
        self.session_id = session_id
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._holding: Holding | None = None
        self._current: tuple[str, ObjectRef] | None = None
        self._rehold = False  # the reservation was lost: reserve again before the next job
        self._grace: asyncio.TimerHandle | None = None  # ends a stop that waits too long

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"qsrv-session-{self.session_id}")

    def wake(self) -> None:
        self._wake.set()

    def cancel_job(self, job_id: str) -> None:
        """The running job ``job_id`` was cancelled: cancel its task."""
        if self._current is not None and self._current[0] == job_id:
            self.service.cluster.cancel(self._current[1])
        self._wake.set()

    def stop(self) -> bool:
        """The session is ending. With a job running: cancel its task and return True (the
        loop ends once the task has ended, releasing the reservation). Else release the
        reservation, end the loop and return False."""
        self._stopped = True
        self._wake.set()
        if self._current is not None and self._task is not None and not self._task.done():
            self.service.cluster.cancel(self._current[1])
            if self._grace is None:
                self._grace = asyncio.get_running_loop().call_later(
                    self.service.config.stop_grace_s, self._task.cancel)
            return True
        self._end()
        return False

    def abandon(self) -> None:
        """The gateway is closing: stop at once without changing the session (a restart
        resumes it; a job that was running runs again)."""
        self._stopped = True
        if self._current is not None:
            self.service.cluster.cancel(self._current[1])
        self._end()

    def _end(self) -> None:
        if self._holding is not None:
            self._holding.release()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def finished(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            if not await self._hold():
                return
            while not self._stopped:
                self._wake.clear()
                if self.service.session_expired(self.session_id):
                    return
                job = self.service.store.next_job(self.session_id)
                if job is None:
                    await self._sleep()
                    continue
                if self._rehold:
                    self._rehold = False
                    if not await self._hold():
                        return
                    continue
                await self._run_job(job)
        except asyncio.CancelledError:
            pass
        except Exception:
            _log.exception("the loop of session %s failed", self.session_id)
            with contextlib.suppress(Exception):
                self.service.session_failed(self.session_id, StopReason.ERROR,
                                            "the gateway failed to run it; see its log")
        finally:
            if self._grace is not None:
                self._grace.cancel()
            if self._holding is not None:
                self._holding.release()
            self.service.loop_ended(self.session_id)

    async def _hold(self) -> bool:
        """Reserve the platform and wait until the reservation is placed; False if the
        session ended meanwhile. A reservation that is infeasible (no connected worker could
        hold it: workers restarting, say) is waited on for ``infeasible_grace_s`` before the
        session stops (``infeasible``); one that is released is asked for again."""
        failures = 0
        infeasible_since: float | None = None
        grace = self.service.config.infeasible_grace_s
        while not self._stopped:
            session = self.service.store.session(self.session_id)
            if session is None or not session.active:
                return False
            try:
                if self._holding is None or self._holding.released:
                    platform = await self.service._platform_for(session.platform)
                    if self._holding is not None:
                        self._holding.release()
                    self._holding = Holding(platform.target, f"session {self.session_id}")
                await self._holding.ready()
            except ReservationError as exc:
                reason = getattr(exc, "reason", None) or str(exc)
                if self._holding is not None and not self._holding.released:  # infeasible
                    now = time.time()
                    infeasible_since = infeasible_since or now
                    if now - infeasible_since >= grace:
                        self.service.session_failed(self.session_id, StopReason.INFEASIBLE,
                                                    reason)
                        return False
                    self.service.session_note(self.session_id, reason)
                delay = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
                failures += 1
                await self._sleep(delay)
                continue
            except (GatewayError, QsrvError, OSError) as exc:
                delay = _RETRY_S[min(failures, len(_RETRY_S) - 1)]
                failures += 1
                _log.info("session %s cannot reserve %s yet (%s); trying again in %g s",
                          self.session_id, session.platform, exc, delay)
                await self._sleep(delay)
                continue
            self.service.session_started(self.session_id, self._holding.id)
            return True
        return False

    async def _sleep(self, at_most: float | None = None) -> None:
        """Until woken, or the session's next deadline (or ``at_most`` seconds)."""
        session = self.service.store.session(self.session_id)
        ends = None if session is None else session.deadline()
        wait = None if ends is None or math.isinf(ends) else max(0.0, ends - time.time()) + 0.001
        if at_most is not None:
            wait = at_most if wait is None else min(wait, at_most)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def _run_job(self, job: QJobRecord) -> None:
        service = self.service
        if not service.job_started(job):
            return
        session = service.store.session(self.session_id)
        batch = service.store.batch(job.batch_id, with_jobs=False) if job.batch_id else None
        options = batch.configuration.get("options") if batch is not None else None
        run = JobRun(job.id, job.program.kind, job.program.data, job.shots, dict(job.variables),
                     job.platform, job.seed, options if isinstance(options, dict) else None)
        assert self._holding is not None
        left = None
        if session is not None and session.started_at is not None \
                and math.isfinite(session.max_duration_s):
            left = max(0.01, session.started_at + session.max_duration_s - time.time())
        if self._holding.lost:
            self._lost(job, "its reservation was released")
            return
        try:
            ref = self._holding.submit(run)
        except ReservationError as exc:
            self._lost(job, str(exc))
            return
        except QsrvError as exc:
            service.job_ended(job.id, None, _error_text(exc))
            return
        self._current = (job.id, ref)
        try:
            counts, native = await self._result(ref, left)
        except Exception as exc:
            self._current = None  # its task has ended: a stop from here on has nothing to wait
            if self._stopped:
                return  # the session is ending: the service cancels the job as it stops
            if isinstance(exc, TaskCancelledError):  # cancel_job marked it, or the cluster
                service.job_ended(job.id, None, "its task was cancelled on the cluster")
            elif isinstance(exc, ReservationError | ConnectionLostError):
                self._lost(job, str(exc))
            else:
                service.job_ended(job.id, None, _error_text(exc))
        else:
            self._current = None
            service.job_ended(job.id, QResult(counts, native), None)  # may end the session
        finally:
            self._current = None

    async def _result(self, ref: ObjectRef, left: float | None
                      ) -> tuple[dict[str, int], str | None]:
        """The job's result; its task is cancelled if the session's maximum duration comes
        first (the session is then ``stopping`` until the task has ended)."""
        while True:
            try:
                return await asyncio.wait_for(self.service.cluster.result(ref), left)
            except (TimeoutError, GetTimeoutError):
                if self._stopped or self.service.session_expired(self.session_id):
                    left = None  # stopping: stop() cancelled the task; wait for its end
                else:
                    left = 0.05  # the wall clock is a hair behind the loop's: very soon

    def _lost(self, job: QJobRecord, why: str) -> None:
        """The reservation is gone: the job runs again in a new one (a job that lost three
        ends in ERROR); the loop reserves again before its next job."""
        lost = sum(1 for e in job.errors if e.startswith(_LOST))
        if lost + 1 >= _MAX_LOST:
            self.service.job_ended(job.id, None, f"{_LOST} {_MAX_LOST} times ({why})")
        else:
            self.service.job_requeued(job.id, f"{_LOST} ({why}); it runs again")
        self._rehold = True


def _error_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if cause is not None else \
        f"{type(exc).__name__}: {exc}"
    return text[:_ERROR_MAX]
