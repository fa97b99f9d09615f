"""The quantum service: the one place where sessions, batches and quantum jobs change.

Reads (``session``, ``batch``, ``job``, listings, ``result``) are plain methods; changes and
waits are coroutines (they may touch the cluster or wait). Every method takes the
authenticated ``User`` first; another user's object is a NotFoundError. All run on the
gateway's event loop thread; a change is written to SQLite (``_store``) before anyone is told.

Invariants:

- Sessions are get-or-create by (user, platform, deduplication id): the check and the insert
  run with no await between them (and a unique index backs it), so concurrent creators get
  one session. Without a deduplication id every call makes a new session.
- A session in ``starting`` or ``running`` has one loop (``_sessions.SessionLoop``) that holds
  its reservation and runs its PENDING jobs one at a time in ``seq`` order; it stops the
  session at its maximum duration (from ``started_at``) or once idle (no job submitted,
  started or ended) for its idle duration, with the reason. Stopping cancels its queued jobs
  at once (CANCELED, the reason in ``errors``); while a running job's task is being cancelled
  the session is ``stopping``; once its loop has released the reservation it is ``stopped``,
  what is left of its jobs cancelled and its batches ended.
- A platform not offered yet is waited for (``probe_wait_s``) while a worker's engine probe
  has not reported or no worker has connected since the start: a session or batch asked for
  right after the gateway starts finds its platform.
- A batch's per-status job counts are kept by the store (triggers, migration 5): its status
  and ``job_counts`` read them, never its jobs.
- A batch created without a session gets a session of its own (``internal``: no duration
  limits, not listed by default) that ends (``completed``) when the batch ends.
- A batch is DONE once closed with every job ended (ERROR when every job ended in ERROR);
  an open batch with nothing to run for ``timeout_s`` (``batch_timeout_s``, default 10 min)
  becomes TIMED_OUT. A rebatch whose filters match no job is an empty batch, DONE at once.
- Jobs are validated before anything is stored (``qsrv.quantum.engines.check`` against the
  platform: width, shots, variables, engine); a refused job leaves nothing behind. A create or
  add repeated with an ``idempotency_key`` already used returns the batch and queues nothing.
- Waits (``wait_job``, ``wait_batch``, ``wait_session``) are woken by the change itself
  (``_changes``: an ``asyncio.Event`` per object), never by polling.
- Restart: everything is in SQLite. Sessions keep their status and deadlines (a deadline
  passed while the gateway was down stops the session at start, with its reason); their loops
  reserve again and run what is queued. A job that was RUNNING when the gateway stopped runs
  again from the start (quantum jobs are pure functions of program, variables, shots and
  seed); open batches keep their idle clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from qsrv.errors import ConflictError, InvalidRequestError, NotFoundError
from qsrv.gateway._models import User
from qsrv.gateway._quantum import _checks
from qsrv.gateway._quantum._changes import Changes
from qsrv.gateway._quantum._models import (
    ACTIVE_SESSION,
    TERMINAL,
    BatchFilters,
    BatchRecord,
    JobFilters,
    JobSpec,
    Page,
    Pagination,
    QJobRecord,
    QResult,
    QStatus,
    SessionFilters,
    SessionRecord,
    SessionStatus,
    StopReason,
    parse_duration,
)
from qsrv.gateway._quantum._platforms import Platforms
from qsrv.gateway._quantum._runner import ClusterDriver
from qsrv.gateway._quantum._sessions import SessionLoop
from qsrv.gateway._quantum._store import NewJob, QuantumStore

if TYPE_CHECKING:
    from qsrv.gateway._store import Store
    from qsrv.quantum.engines import Platform, Program

__all__ = ["QuantumConfig", "QuantumService"]

@dataclass(frozen=True, slots=True)
class QuantumConfig:
    cluster_address: str | None = None
    cluster_token: str | None = None
    batch_timeout_s: float = 600.0  # an open batch idle this long becomes TIMED_OUT
    platforms_ttl_s: float = 1.0  # how long a read of the cluster's platforms is reused
    infeasible_grace_s: float = 60.0  # a session's reservation may stay infeasible this long
    probe_wait_s: float = 30.0  # how long a platform not (yet) offered is waited for
    stop_grace_s: float = 15.0  # how long a stopping session waits for its job's task to end


class QuantumService:
    """Platforms, sessions, batches, quantum jobs. ``await start(store)``, ``await close()``."""

    def __init__(self, config: QuantumConfig) -> None:
        self.config = config
        self.cluster = ClusterDriver(config.cluster_address, config.cluster_token)
        self._store: QuantumStore | None = None
        self._loops: dict[str, SessionLoop] = {}
        self._changes = Changes()
        self._platforms = Platforms(self.cluster, lambda: self.config)
        self._clock: asyncio.Task[None] | None = None
        self._clock_wake = asyncio.Event()
        self._closing = False

    @property
    def store(self) -> QuantumStore:
        if self._store is None:
            raise ConflictError("the quantum service is not started")
        return self._store

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self, store: Store) -> None:
        self._store = QuantumStore(store.connection)
        self._closing = False
        self._platforms.started()
        self._recover()
        self._clock = asyncio.create_task(self._batch_clock(), name="qsrv-quantum-batches")

    async def close(self) -> None:
        """Stop running sessions' loops (their state stays stored: a restart resumes them) and
        release their reservations."""
        self._closing = True
        loops = list(self._loops.values())
        for loop in loops:
            loop.abandon()
        await asyncio.gather(*(loop.finished() for loop in loops), return_exceptions=True)
        self._loops.clear()
        if self._clock is not None:
            self._clock.cancel()
            await asyncio.gather(self._clock, return_exceptions=True)
            self._clock = None
        await self.cluster.close()
        self._store = None

    def _recover(self) -> None:
        store, now = self.store, time.time()
        for job in store.jobs_with_status(QStatus.RUNNING):  # runs again (see the docstring)
            store.update_job(job.id, status=QStatus.PENDING, started_at=None)
        for session in store.sessions_with_status(SessionStatus.STOPPING):
            self._finish_session(session, session.reason or StopReason.TERMINATED,
                                 session.message)
        for session in store.sessions_with_status(*ACTIVE_SESSION):
            ends = session.deadline()
            if ends is not None and ends <= now:
                self._finish_session(session, _expiry(session, now))
            else:
                self._spawn(session)

    # -- platforms -----------------------------------------------------------------------------

    async def platforms(self) -> list[Platform]:
        """What the cluster's workers offer (read at most every ``platforms_ttl_s``; right
        after a start, once their engine probes have reported: ``_platforms``)."""
        return await self._platforms.settled()

    async def platform(self, name: str) -> Platform:
        """The platform ``name``; one not offered yet is waited for while workers' engine
        probes may still report (``_platforms``), then NotFoundError."""
        return await self._platforms.get(name)

    async def _platform_for(self, name: str) -> Platform:
        """The platform's spec to validate against: live, else as last seen (a session's
        platform whose workers went away keeps accepting jobs; they wait for a worker)."""
        try:
            return await self.platform(name)
        except NotFoundError:
            known = self._platforms.last_seen(name)
            if known is None:
                raise
            return known

    # -- sessions ------------------------------------------------------------------------------

    async def open_session(
        self, user: User, platform: str, *, deduplication_id: str | None = None,
        max_duration: str | float = "1h", max_idle_duration: str | float = "20m",
        name: str | None = None, project: str | None = None,
    ) -> tuple[SessionRecord, bool]:
        """Get-or-create: (the session, whether this call created it). A running or starting
        session of ``user`` with the same platform, project and deduplication id is returned."""
        max_s = parse_duration(max_duration, name="max_duration")
        idle_s = parse_duration(max_idle_duration, name="max_idle_duration")
        if idle_s > max_s:
            raise InvalidRequestError(
                f"max_idle_duration ({max_idle_duration!r}) must not be longer than "
                f"max_duration ({max_duration!r})")
        deduplication_id = _checks.optional_text(deduplication_id, "deduplication_id")
        name = _checks.optional_text(name, "name")
        project = _checks.optional_text(project, "project")
        if deduplication_id is not None:
            found = self.store.active_session(user.user_id, platform, deduplication_id, project)
            if found is not None:
                return found, False
        await self._platform_for(platform)
        # From here to the insert nothing awaits: get-or-create is atomic on the loop.
        if deduplication_id is not None:
            found = self.store.active_session(user.user_id, platform, deduplication_id, project)
            if found is not None:
                return found, False
        return self._new_session(user, platform, max_s, idle_s, deduplication_id=deduplication_id,
                                 name=name, project=project), True

    def _new_session(self, user: User, platform: str, max_s: float, idle_s: float, *,
                     deduplication_id: str | None = None, name: str | None = None,
                     project: str | None = None, internal: bool = False,
                     ended: bool = False) -> SessionRecord:
        """A new session, starting (its loop reserves the platform); ``ended``: stopped
        (``completed``) from the start, with no loop (an empty batch's own session)."""
        now = time.time()
        session_id = str(uuid.uuid4())
        record = SessionRecord(
            session_id, user.user_id, project, platform, deduplication_id,
            name or deduplication_id or f"qsrv-session-{session_id[:8]}",
            SessionStatus.STOPPED if ended else SessionStatus.STARTING,
            StopReason.COMPLETED if ended else None, max_s, idle_s, now, None,
            now if ended else None, now, None, internal=internal)
        self.store.insert_session(record)
        if not ended:
            self._spawn(record)
        return record

    def session(self, user: User, session_id: str) -> SessionRecord:
        record = self.store.session(str(session_id))
        if record is None or record.user_id != user.user_id:
            raise NotFoundError(f"no session {session_id!r}")
        return record

    def projects(self, user: User) -> list[str]:
        """The project labels ``user``'s batches and sessions carry, last used first."""
        return self.store.projects(user.user_id)

    def sessions(self, user: User, *, status: SessionStatus | str | None = None,
                 platform: str | None = None, project: str | None = None,
                 filters: SessionFilters | None = None,
                 page: Pagination | None = None) -> Page[SessionRecord]:
        filters = filters or SessionFilters()
        if status is not None:
            filters = replace(filters, status=_checks.session_status(status))
        if platform is not None:
            filters = replace(filters, platform=platform)
        if project is not None:
            filters = replace(filters, project=project)
        for value in filters.values("status") or ():
            _checks.session_status(value)
        return self.store.list_sessions(user.user_id, filters, page or Pagination())

    async def terminate_session(self, user: User, session_id: str) -> SessionRecord:
        record = self.session(user, session_id)
        if record.active:
            self._stop_session(record, StopReason.TERMINATED)
        return self.session(user, session_id)

    async def delete_session(self, user: User, session_id: str) -> None:
        record = self.session(user, session_id)
        if record.active:
            self._stop_session(record, StopReason.TERMINATED)
        loop = self._loops.get(record.id)
        if loop is not None:
            await loop.finished()
        self.store.delete_session(record.id)
        self._changes.notify(record.id)

    # -- jobs and batches ----------------------------------------------------------------------

    async def submit(self, user: User, session_id: str, spec: JobSpec) -> QJobRecord:
        """A job of the session, outside any batch."""
        session = self._active_session(user, session_id)
        if spec.program is None:
            raise InvalidRequestError("a session job needs its program")
        program = await _program(spec.program)
        new = await self._validate(session.platform, program, [spec])
        session = self._active_session(user, session_id)  # it may have ended meanwhile
        now = time.time()
        with self.store.transaction():
            self.store.insert_jobs(session, None, session.platform, session.project, new, now)
        self._wake(session.id)
        job = self.store.job(new[0].job_id)
        assert job is not None
        return job

    async def create_batch(
        self, user: User, program: Program | Any, jobs: Sequence[JobSpec], *,
        platform: str | None = None, session_id: str | None = None, open: bool = False,
        idempotency_key: str | None = None, tags: Iterable[str] = (),
        project: str | None = None, configuration: dict[str, Any] | None = None,
    ) -> BatchRecord:
        """A batch of ``jobs`` running ``program`` (each job may bring its own), in a session
        (``session_id``) or on a platform (a session of its own)."""
        key = _checks.optional_text(idempotency_key, "idempotency_key")
        if key is not None and (done := self._idempotent(user, key, "create")) is not None:
            return done
        program = await _program(program)
        tags = _checks.tags(tags)
        configuration = _checks.configuration(configuration)
        project = _checks.optional_text(project, "project")
        if session_id is not None:
            session = self._active_session(user, session_id)
            if platform is not None and platform != session.platform:
                raise InvalidRequestError(
                    f"session {session.id} runs on {session.platform}, not {platform}")
            platform = session.platform
        elif platform is None:
            raise InvalidRequestError("a batch needs a platform or a session")
        if not open and not jobs:
            raise InvalidRequestError("a closed batch needs at least one job")
        new = await self._validate(platform, program, jobs, configuration)
        if key is not None and (done := self._idempotent(user, key, "create")) is not None:
            return done  # the same request, handled while this one was validated
        if session_id is not None:
            session = self._active_session(user, session_id)
        else:
            session = self._new_session(user, platform, math.inf, math.inf, project=project,
                                        internal=True)
        now = time.time()
        batch_id = str(uuid.uuid4())
        record = BatchRecord(
            batch_id, user.user_id, project, session.id, platform, QStatus.PENDING, open, None,
            tags, program, configuration, now, now, None, (), self.config.batch_timeout_s)
        self._insert_batch(record, session, new, key, now)
        return self.batch(user, batch_id)

    def _insert_batch(self, record: BatchRecord, session: SessionRecord, new: list[NewJob],
                      key: str | None, now: float) -> None:
        store = self.store
        with store.transaction():
            digest = store.put_program(record.program, now)
            store.insert_batch(record, digest, now)
            if new:
                store.insert_jobs(session, record.id, record.platform, record.project, new, now)
            if key is not None:
                store.remember(record.user_id, key, "create", record.id, now)
        self._wake(session.id)
        if record.open:
            self._clock_wake.set()
        self._refresh_batch(record.id)

    async def add_jobs(self, user: User, batch_id: str, jobs: Sequence[JobSpec], *,
                       idempotency_key: str | None = None) -> BatchRecord:
        key = _checks.optional_text(idempotency_key, "idempotency_key")
        if key is not None and (done := self._idempotent(user, key, "add")) is not None:
            return done
        batch = self._open_batch(user, batch_id)
        new = await self._validate(batch.platform, batch.program, jobs, batch.configuration)
        if key is not None and (done := self._idempotent(user, key, "add")) is not None:
            return done
        batch = self._open_batch(user, batch_id)
        session = self._active_session(user, batch.session_id)
        now = time.time()
        store = self.store
        with store.transaction():
            store.insert_jobs(session, batch.id, batch.platform, batch.project, new, now)
            store.update_batch(batch.id, updated_at=now, activity_at=now)
            if key is not None:
                store.remember(user.user_id, key, "add", batch.id, now)
        self._wake(session.id)
        self._refresh_batch(batch.id)
        return self.batch(user, batch_id)

    async def close_batch(self, user: User, batch_id: str) -> BatchRecord:
        batch = self.batch(user, batch_id, jobs=False)
        if batch.open:
            self.store.update_batch(batch.id, open=False, updated_at=time.time())
            self._changes.notify(batch.id)
            self._refresh_batch(batch.id)
        return self.batch(user, batch_id)

    async def cancel_batch(self, user: User, batch_id: str) -> BatchRecord:
        batch = self.batch(user, batch_id)
        if batch.status not in TERMINAL:
            self._cancel_jobs([j for j in batch.jobs if j.status not in TERMINAL],
                              "its batch was cancelled")
            self._end_batch(batch.id, QStatus.CANCELED)
        return self.batch(user, batch_id)

    async def set_tags(self, user: User, batch_id: str, tags: Iterable[str]) -> BatchRecord:
        batch = self.batch(user, batch_id, jobs=False)
        self.store.update_batch(batch.id, tags=_checks.tags(tags), updated_at=time.time())
        self._changes.notify(batch.id)
        return self.batch(user, batch_id)

    async def retry_job(self, user: User, job_id: str) -> QJobRecord:
        """Run an ended job of an open batch again, as a new job at the batch's end."""
        job = self.job(user, job_id)
        if job.batch_id is None:
            raise ConflictError(f"job {job_id} is not in a batch; only jobs of open batches "
                                "are retried")
        if job.status not in TERMINAL:
            raise ConflictError(f"job {job_id} is {job.status}: only an ended job is retried")
        batch = self._open_batch(user, job.batch_id)
        session = self._active_session(user, batch.session_id)
        new = [NewJob(str(uuid.uuid4()), job.shots, dict(job.variables),
                      self.store.put_program(job.program, time.time()), job.seed, job.id)]
        now = time.time()
        with self.store.transaction():
            self.store.insert_jobs(session, batch.id, batch.platform, batch.project, new, now)
            self.store.update_batch(batch.id, updated_at=now, activity_at=now)
        self._wake(session.id)
        self._refresh_batch(batch.id)
        return self.job(user, new[0].job_id)

    async def rebatch(self, user: User, batch_id: str,
                      filters: JobFilters | None = None) -> BatchRecord:
        """A new closed batch of the jobs of a closed batch that match ``filters`` (``id``,
        ``status``, ``min_shots``, ``max_shots``, ``start_date``, ``end_date``), whose
        ``parent_id`` is the old batch (and each job's, the job it copies). When no job
        matches, the new batch is empty and DONE at once (as pasqal-cloud's ``rebatch``
        expects of a batch with, say, no job in ERROR)."""
        old = self.batch(user, batch_id, jobs=False)
        if old.open:
            raise ConflictError(f"batch {batch_id} is open: close it before rebatching")
        chosen = self.store.matching_jobs(
            user.user_id, replace(_checks.job_filters(filters), batch_id=old.id))
        now = time.time()
        new = [NewJob(str(uuid.uuid4()), j.shots, dict(j.variables),
                      self.store.put_program(j.program, now), j.seed, j.id) for j in chosen]
        # No job matching: an empty batch, DONE at once, in a session that never runs.
        session = self._new_session(user, old.platform, math.inf, math.inf,
                                    project=old.project, internal=True, ended=not new)
        record = BatchRecord(
            str(uuid.uuid4()), user.user_id, old.project, session.id, old.platform,
            QStatus.PENDING if new else QStatus.DONE, False, old.id, old.tags, old.program,
            old.configuration, now, now, None if new else now, (), old.timeout_s)
        self._insert_batch(record, session, new, None, now)
        return self.batch(user, record.id)

    async def cancel_job(self, user: User, job_id: str) -> QJobRecord:
        job = self.job(user, job_id)
        if job.status in TERMINAL:
            raise ConflictError(f"job {job_id} is {job.status}: it has already ended")
        self._cancel_jobs([job], "cancelled")
        return self.job(user, job_id)

    async def cancel_jobs(self, user: User, filters: JobFilters) -> list[QJobRecord]:
        """Cancel every PENDING or RUNNING job of the user matching ``filters``."""
        found = self.store.matching_jobs(user.user_id, _checks.job_filters(filters),
                                         (QStatus.PENDING, QStatus.RUNNING))
        self._cancel_jobs(found, "cancelled")
        return [self.job(user, j.id) for j in found]

    def batch(self, user: User, batch_id: str, *, jobs: bool = True) -> BatchRecord:
        record = self.store.batch(str(batch_id), with_jobs=jobs)
        if record is None or record.user_id != user.user_id:
            raise NotFoundError(f"no batch {batch_id!r}")
        return record

    def batches(self, user: User, filters: BatchFilters | None = None,
                page: Pagination | None = None, *, jobs: bool = True) -> Page[BatchRecord]:
        """A page of the user's batches, newest first; ``jobs=False`` leaves each batch's
        ``jobs`` empty (cheaper for listings that only show batches)."""
        filters = filters or BatchFilters()
        if not isinstance(filters, BatchFilters):
            raise InvalidRequestError("batch filters must be BatchFilters")
        for value in filters.values("status") or ():
            _checks.status(value)
        _checks.check_dates(filters.start_date, filters.end_date)
        return self.store.list_batches(user.user_id, filters, page or Pagination(),
                                       with_jobs=jobs)

    def job_counts(self, user: User, batch_id: str) -> dict[str, int]:
        """How many of the batch's jobs have each status (status name -> count; statuses with
        no job left out), from stored counts kept as jobs change: no scan of its jobs."""
        if self.store.batch_user(str(batch_id)) != user.user_id:
            raise NotFoundError(f"no batch {batch_id!r}")
        return {str(status): n for status, n in self.store.batch_counts(str(batch_id)).items()}

    def job(self, user: User, job_id: str) -> QJobRecord:
        record = self.store.job(str(job_id))
        if record is None or record.user_id != user.user_id:
            raise NotFoundError(f"no job {job_id!r}")
        return record

    def jobs(self, user: User, filters: JobFilters | None = None,
             page: Pagination | None = None) -> Page[QJobRecord]:
        return self.store.list_jobs(user.user_id, _checks.job_filters(filters),
                                    page or Pagination())

    def result(self, user: User, job_id: str) -> QResult:
        job = self.job(user, job_id)
        result = self.store.result(job.id) if job.status is QStatus.DONE else None
        if result is None:
            raise ConflictError(f"job {job_id} is {job.status}: it has no result")
        return result

    # -- waiting (pushed) ----------------------------------------------------------------------

    async def wait_job(self, user: User, job_id: str,
                       timeout: float | None = None) -> QJobRecord:
        """The job once it has ended, or as it is after ``timeout`` seconds."""
        return await self._changes.wait(job_id, lambda: self.job(user, job_id),
                                lambda j: j.status in TERMINAL, timeout)

    async def wait_batch(self, user: User, batch_id: str,
                         timeout: float | None = None) -> BatchRecord:
        """The batch once it has ended, or as it is after ``timeout`` seconds."""
        return await self._changes.wait(batch_id, lambda: self.batch(user, batch_id),
                                lambda b: b.status in TERMINAL, timeout)

    async def wait_session(self, user: User, session_id: str, timeout: float | None = None,
                           statuses: Iterable[SessionStatus] = (SessionStatus.STOPPED,)
                           ) -> SessionRecord:
        """The session once its status is one of ``statuses`` (default: stopped), or as it is
        after ``timeout`` seconds."""
        wanted = frozenset(_checks.session_status(s) for s in statuses)
        return await self._changes.wait(session_id, lambda: self.session(user, session_id),
                                lambda s: s.status in wanted, timeout)

    # -- state changes -------------------------------------------------------------------------

    def _spawn(self, session: SessionRecord) -> None:
        if self._closing or session.id in self._loops:
            return
        loop = SessionLoop(self, session.id)
        self._loops[session.id] = loop
        loop.start()

    def loop_ended(self, session_id: str) -> None:
        """Called by a session's loop as it ends (its reservation released): a stopping
        session is now stopped."""
        self._loops.pop(session_id, None)
        if self._closing or self._store is None:
            return
        record = self.store.session(session_id)
        if record is not None and record.status is SessionStatus.STOPPING:
            self._finish_session(record, record.reason or StopReason.TERMINATED, record.message)

    def _wake(self, session_id: str) -> None:
        loop = self._loops.get(session_id)
        if loop is not None:
            loop.wake()

    def session_started(self, session_id: str, reservation_id: str | None) -> SessionRecord:
        """The session's reservation is ready: it runs (its clocks start now, unless it
        already ran before a restart)."""
        record = self.store.session(session_id)
        assert record is not None
        now = time.time()
        if record.status is SessionStatus.STARTING:
            self.store.update_session(
                session_id, status=SessionStatus.RUNNING, started_at=now, last_job_at=now,
                reservation_id=reservation_id, message=None)
        else:
            self.store.update_session(session_id, reservation_id=reservation_id, message=None)
        self._changes.notify(session_id)
        record = self.store.session(session_id)
        assert record is not None
        return record

    def session_note(self, session_id: str, message: str | None) -> None:
        """Why an active session waits (its reservation is infeasible for now); cleared once
        it holds its reservation."""
        record = self.store.session(session_id)
        if record is not None and record.active and record.message != message:
            self.store.update_session(session_id, message=message)
            self._changes.notify(session_id)

    def job_started(self, job: QJobRecord) -> bool:
        """Mark the job RUNNING; False when it is no longer PENDING (cancelled meanwhile)."""
        current = self.store.job(job.id)
        if current is None or current.status is not QStatus.PENDING:
            return False
        now = time.time()
        with self.store.transaction():
            self.store.update_job(job.id, status=QStatus.RUNNING, started_at=now)
            self.store.update_session(job.session_id, last_job_at=now)
        self._changes.notify(job.id)
        if job.batch_id is not None:
            self._refresh_batch(job.batch_id)
        return True

    def job_ended(self, job_id: str, result: QResult | None, error: str | None) -> None:
        """Store how a RUNNING job ended (nothing when it was cancelled meanwhile)."""
        job = self.store.job(job_id)
        if job is None or job.status is not QStatus.RUNNING:
            return
        now = time.time()
        with self.store.transaction():
            if result is not None:
                self.store.put_result(job_id, result)
                self.store.update_job(job_id, status=QStatus.DONE, ended_at=now)
            else:
                self.store.update_job(job_id, status=QStatus.ERROR, ended_at=now,
                                      errors=(*job.errors, error or "failed"))
            self.store.update_session(job.session_id, last_job_at=now)
            if job.batch_id is not None:
                self.store.update_batch(job.batch_id, activity_at=now)
        self._changes.notify(job_id)
        if job.batch_id is not None:
            self._refresh_batch(job.batch_id)

    def job_requeued(self, job_id: str, why: str) -> None:
        """A RUNNING job goes back to PENDING (its reservation was lost; it runs again)."""
        job = self.store.job(job_id)
        if job is not None and job.status is QStatus.RUNNING:
            self.store.update_job(job_id, status=QStatus.PENDING, started_at=None,
                                  errors=(*job.errors, why))
            self._changes.notify(job_id)

    def session_expired(self, session_id: str) -> bool:
        """Stop the session if one of its clocks ran out; whether it did."""
        record = self.store.session(session_id)
        if record is None or not record.active:
            return True
        now = time.time()
        ends = record.deadline()
        if ends is None or ends > now:
            return False
        if record.status is SessionStatus.RUNNING and self.store.next_job(session_id) \
                and record.started_at is not None \
                and now < record.started_at + record.max_duration_s:
            return False  # idle only counts while nothing is queued
        self._stop_session(record, _expiry(record, now))
        return True

    def session_failed(self, session_id: str, reason: StopReason, message: str) -> None:
        record = self.store.session(session_id)
        if record is not None and record.active:
            self._stop_session(record, reason, message)

    def _stop_session(self, record: SessionRecord, reason: StopReason,
                      message: str | None = None) -> None:
        """End an active session: its queued jobs are cancelled now; while its running job's
        task is being cancelled it is ``stopping``; once its loop has ended and released the
        reservation (at once when no job runs) it is ``stopped``, what is left of its jobs
        cancelled and its batches ended (``_finish_session``)."""
        self.store.update_session(record.id, status=SessionStatus.STOPPING, reason=reason,
                                  message=message)
        queued = [j for j in self.store.unfinished_jobs(record.id)
                  if j.status is QStatus.PENDING]
        self._cancel_jobs(queued, _ended_why(reason, message), refresh=False)
        loop = self._loops.get(record.id)
        if loop is not None and loop.stop():
            self._changes.notify(record.id)  # stopping; loop_ended finishes it
            return
        self._finish_session(record, reason, message)

    def _finish_session(self, record: SessionRecord, reason: StopReason,
                        message: str | None = None) -> None:
        self._cancel_jobs(self.store.unfinished_jobs(record.id), _ended_why(reason, message),
                          refresh=False)
        ending = {StopReason.TERMINATED: QStatus.CANCELED, StopReason.COMPLETED: QStatus.DONE,
                  StopReason.MAX_DURATION: QStatus.TIMED_OUT, StopReason.IDLE: QStatus.TIMED_OUT
                  }.get(reason, QStatus.ERROR)
        for batch_id in self.store.batches_of_session(record.id):
            batch = self.store.batch(batch_id, with_jobs=False)
            if batch is not None and batch.status not in TERMINAL:
                self._end_batch(batch_id, ending, stop_session=False)
        self.store.update_session(record.id, status=SessionStatus.STOPPED, reason=reason,
                                  message=message, terminated_at=time.time())
        self._changes.notify(record.id)

    def _cancel_jobs(self, jobs: Iterable[QJobRecord], why: str, *,
                     refresh: bool = True) -> None:
        now = time.time()
        batches: set[str] = set()
        for job in jobs:
            current = self.store.job(job.id)
            if current is None or current.status in TERMINAL:
                continue
            self.store.update_job(job.id, status=QStatus.CANCELED, ended_at=now,
                                  errors=(*current.errors, why))
            if current.status is QStatus.RUNNING:
                loop = self._loops.get(current.session_id)
                if loop is not None:
                    loop.cancel_job(current.id)
            self._changes.notify(job.id)
            if current.batch_id is not None:
                batches.add(current.batch_id)
        if refresh:
            for batch_id in batches:
                self._refresh_batch(batch_id)

    def _refresh_batch(self, batch_id: str) -> None:
        """The batch's status from its jobs' (PENDING -> RUNNING -> DONE/ERROR)."""
        batch = self.store.batch(batch_id, with_jobs=False)
        if batch is None or batch.status in TERMINAL:
            return
        counts = self.store.batch_counts(batch_id)
        unfinished = counts.get(QStatus.PENDING, 0) + counts.get(QStatus.RUNNING, 0)
        if not batch.open and not unfinished:
            total = sum(counts.values())
            errors = counts.get(QStatus.ERROR, 0)
            self._end_batch(batch_id, QStatus.ERROR if total and errors == total
                            else QStatus.DONE)
            return
        if batch.open and not unfinished:
            self._clock_wake.set()  # idle from now: its timeout starts
        started = sum(counts.values()) - counts.get(QStatus.PENDING, 0)
        status = QStatus.RUNNING if started else QStatus.PENDING
        if status is not batch.status:
            self.store.update_batch(batch_id, status=status, updated_at=time.time())
        self._changes.notify(batch_id)

    def _end_batch(self, batch_id: str, status: QStatus, *, stop_session: bool = True) -> None:
        now = time.time()
        self.store.update_batch(batch_id, status=status, open=False, ended_at=now,
                                updated_at=now)
        self._changes.notify(batch_id)
        batch = self.store.batch(batch_id, with_jobs=False)
        if stop_session and batch is not None:
            session = self.store.session(batch.session_id)
            if session is not None and session.internal and session.active:
                self._stop_session(session, StopReason.COMPLETED)

    async def _batch_clock(self) -> None:
        """Open batches with nothing to run for their timeout become TIMED_OUT; sleeps until
        the next such deadline, or until an open batch goes idle."""
        while True:
            now = time.time()
            next_due = math.inf
            for batch_id, activity_at, timeout_s in self.store.open_batches():
                counts = self.store.batch_counts(batch_id)
                if counts.get(QStatus.PENDING, 0) or counts.get(QStatus.RUNNING, 0):
                    continue  # it ends or goes idle later; job ends move activity_at
                due = activity_at + timeout_s
                if due <= now:
                    self._end_batch(batch_id, QStatus.TIMED_OUT)
                else:
                    next_due = min(next_due, due)
            self._clock_wake.clear()
            wait = None if math.isinf(next_due) else max(0.01, next_due - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clock_wake.wait(), wait)

    # -- checks --------------------------------------------------------------------------------

    def _active_session(self, user: User, session_id: str) -> SessionRecord:
        session = self.session(user, session_id)
        if not session.active:
            raise ConflictError(f"session {session_id} is {session.status} "
                                f"({session.reason}): it takes no more jobs")
        return session

    def _open_batch(self, user: User, batch_id: str) -> BatchRecord:
        batch = self.batch(user, batch_id, jobs=False)
        if not batch.open or batch.status in TERMINAL:
            raise ConflictError(f"batch {batch_id} is {'closed' if not batch.open else ''} "
                                f"{batch.status}: jobs are added to open batches only")
        return batch

    def _idempotent(self, user: User, key: str, kind: str) -> BatchRecord | None:
        found = self.store.idempotent(user.user_id, key)
        if found is None:
            return None
        done_kind, batch_id = found
        if done_kind != kind:
            raise ConflictError(f"idempotency key {key!r} was already used for another request")
        return self.batch(user, batch_id)

    async def _validate(self, platform_name: str, program: Program, specs: Sequence[JobSpec],
                        configuration: dict[str, Any] | None = None) -> list[NewJob]:
        """Check every job against the platform (strictly), with the engine options of its
        batch's ``configuration``; the rows to insert."""
        if len(specs) > _checks.MAX_JOBS_PER_CALL:
            raise InvalidRequestError(
                f"{len(specs)} jobs in one request; at most {_checks.MAX_JOBS_PER_CALL}")
        platform = await self._platform_for(platform_name)
        options = (configuration or {}).get("options")
        jobs = await _checks.in_checker(_checks.prepare, platform, program, specs, options)
        now = time.time()
        return [NewJob(str(uuid.uuid4()), spec.shots, dict(spec.variables),
                       self.store.put_program(prog, now), spec.seed) for prog, spec in jobs]


async def _program(value: Any) -> Program:
    """``value`` as a Program (made in the checker thread unless it is one already)."""
    from qsrv.quantum import engines

    if isinstance(value, engines.Program):
        return value
    return await _checks.in_checker(_checks.as_program, value)


def _ended_why(reason: StopReason, message: str | None) -> str:
    return f"its session ended ({reason}{': ' + message if message else ''})"


def _expiry(record: SessionRecord, now: float) -> StopReason:
    if record.started_at is not None and now >= record.started_at + record.max_duration_s:
        return StopReason.MAX_DURATION
    return StopReason.IDLE
