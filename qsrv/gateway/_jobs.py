"""A job's life in the gateway, from the queue to its stored end.

``JobLifecycle`` starts queued jobs on the runner, supervises them, records how each ended,
stops them and wakes whoever waits for one. The service (``_service``) checks who may ask and
what was asked; this module only runs what it is given. Invariants:

- A job's status changes only in ``set_status``, which checks ``TRANSITIONS``, writes the row
  and its event together, and wakes the job's waiters. A status reported is the one stored.
- A job is RUNNING or STOPPING in the store only while this supervises it (``_tasks``), or
  while the write of its end is retried (``_unsaved``); in both cases it counts as one of its
  user's running jobs, until its end is stored. ``recover`` ends the jobs a previous
  gateway left RUNNING or STOPPING (FAILED, or STOPPED if a stop had been asked) after killing
  any of their processes still alive, and removes every job directory left on disk; QUEUED jobs
  stay queued and run.
- At most ``max_jobs_per_user`` jobs of a user run at once; the rest wait QUEUED, oldest first
  (``JobQueue``). A job that cannot be started because the store or the disk fails stays QUEUED,
  first of its user's, and is tried again later; one that cannot start for any other reason is
  stored FAILED with the reason. No job is left QUEUED in the store and out of the queue.
- When a job's final write fails (a full disk), it is retried, then the job is stored FAILED
  with the reason and what the job had done, without its result: with its output if that
  fits, else keeping the output saved while it ran, else (a disk too full even for that) with
  the tail of its output, or none; until one of these holds they are retried in the
  background.
- A running job holds a token of its own (only its hash is stored) and a cluster credential
  derived for it; the token is cleared and the credential revoked when the job ends.
- All methods run on the gateway's event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import sqlite3
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from qsrv.errors import ConfigError
from qsrv.gateway._cluster import ClusterLink
from qsrv.gateway._config import GatewayConfig
from qsrv.gateway._errors import ConflictError, ForbiddenError, InvalidRequestError
from qsrv.gateway._models import TERMINAL, TRANSITIONS, JobRecord, JobStatus
from qsrv.gateway._process_groups import kill_orphans
from qsrv.gateway._queue import JobQueue
from qsrv.gateway._runner import JobOutcome, JobRunner, JobSpec, LogBuffer
from qsrv.gateway._sandbox import Sandbox
from qsrv.gateway._store import Store, load_job_inputs
from qsrv.gateway._upstream_files import UserFiles
from qsrv.gateway._users import db_path, hash_token, new_token

__all__ = ["FINAL_WRITE_RETRIES_S", "RESTART_ERROR", "JobLifecycle"]

_log = logging.getLogger("qsrv.gateway")
FINAL_WRITE_RETRIES_S = (0.2, 1.0, 3.0)  # waits before retrying a job's final write
_UNSAVED_RETRY_S = 5.0  # then, between tries of storing it FAILED
_TAIL_BYTES = 2048  # the output kept of such a job when nothing more fits
_START_RETRY_S = 1.0  # between tries of starting a job the store would not mark RUNNING
RESTART_ERROR = (
    "the gateway stopped while this job was running; the job was ended and can be run again"
)


class JobLifecycle:
    """Queued, running and ending jobs. ``recover(store, ...)`` and ``start()`` before use,
    ``await close()`` after."""

    def __init__(self, config: GatewayConfig, files: UserFiles, sandbox: Callable[[], Sandbox],
                 link: ClusterLink | None, *,
                 final_write_retries_s: Sequence[float] = FINAL_WRITE_RETRIES_S) -> None:
        self.config = config
        self.runner = JobRunner(config.runner_config())
        self._files = files
        self._sandbox = sandbox  # the sandbox for a job starting now, or ForbiddenError
        self._link = link
        self._final_write_retries_s = tuple(final_write_retries_s)
        self._store: Store | None = None
        self._gateway_id = ""
        self._queue = JobQueue(config.max_jobs_per_user)
        self._tasks: dict[str, asyncio.Task[None]] = {}  # supervised jobs
        self._unsaved: dict[str, asyncio.Task[None]] = {}  # jobs whose end is not stored yet
        self._terminal: dict[str, asyncio.Event] = {}  # set when the job becomes terminal
        self._flusher: asyncio.Task[None] | None = None
        self._start_retry: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def store(self) -> Store:
        if self._store is None:
            raise ConfigError("the gateway's jobs are not started")
        return self._store

    # -- life cycle ----------------------------------------------------------------------------

    def recover(self, store: Store, gateway_id: str) -> None:
        """Take the store: end what a previous gateway left running, queue what it left queued.
        Nothing starts before ``start()``."""
        self._store = store
        self._gateway_id = gateway_id
        now = time.time()
        left = store.jobs_with_status(JobStatus.RUNNING, JobStatus.STOPPING)
        killed = kill_orphans({job.job_id for job in left})
        for job in left:
            if job.job_id in killed:
                _log.warning("killed %d leftover processes of job %s", killed[job.job_id],
                             job.job_id)
            if job.status is JobStatus.STOPPING:
                self.set_status(job, JobStatus.STOPPED, finished_at=now)
            else:
                self.set_status(job, JobStatus.FAILED, finished_at=now, error=RESTART_ERROR)
        # Nothing runs yet: every job directory on disk belongs to an ended job.
        root = self.runner.config.root
        with contextlib.suppress(FileNotFoundError), os.scandir(root) as entries:
            stale = [Path(e.path) for e in entries]
        for path in stale if root.is_dir() else []:
            shutil.rmtree(path, ignore_errors=True)
        for job in store.jobs_with_status(JobStatus.QUEUED):
            self._queue.add(job.user_id, job.job_id, job.created_at)

    def start(self) -> None:
        """Start the queued jobs the users' limits allow, and save running jobs' output now
        and then."""
        self._flusher = asyncio.create_task(self._flush_logs_forever())
        self._dispatch()

    async def close(self) -> None:
        """Stop running jobs (they end FAILED: the gateway stopped), keep queued ones queued."""
        self._closing = True
        if self._start_retry is not None:
            self._start_retry.cancel()
        self.runner.stop_all()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        # A job whose end is still unsaved stays RUNNING in the store: the next start ends it.
        background = list(self._unsaved.values())
        if self._flusher is not None:
            background.append(self._flusher)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    # -- what the service asks -----------------------------------------------------------------

    def queued(self, user_id: int) -> int:
        """How many jobs of the user wait to start."""
        return self._queue.queued(user_id)

    def submit(self, job: JobRecord) -> None:
        """Queue a job just stored QUEUED; it starts once its user is under the limit."""
        self._queue.add(job.user_id, job.job_id, job.created_at)
        self._dispatch()

    def live_logs(self, job_id: str) -> LogBuffer | None:
        """The output of a job running now, None when it runs no more."""
        return self.runner.live_logs(job_id)

    def stop(self, job: JobRecord) -> JobRecord:
        """Begin stopping the job; the record as it is now.

        A queued job becomes STOPPED at once and never starts. A running one becomes STOPPING,
        its process group is terminated, and it becomes STOPPED once the tree is gone (or
        SUCCEEDED or FAILED, when its process had exited before the stop). Stopping a job that
        is STOPPING or terminal changes nothing.
        """
        if job.status is JobStatus.QUEUED:
            job = self.set_status(job, JobStatus.STOPPED, finished_at=time.time())
            self._queue.remove(job.user_id, job.job_id)  # (once the store says so)
        elif job.status is JobStatus.RUNNING:
            job = self.set_status(job, JobStatus.STOPPING)
            self.runner.stop(job.job_id)
        return job

    async def until_terminal(self, job_id: str, timeout: float | None) -> None:
        """Return once the job is terminal, or when ``timeout`` seconds have passed."""
        job = self.store.job(job_id)
        if job is None or job.status in TERMINAL:
            return
        event = self._terminal.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def set_status(self, job: JobRecord, status: JobStatus, **fields: Any) -> JobRecord:
        """Move the job to ``status`` (ConflictError if ``TRANSITIONS`` forbids it), storing
        ``fields`` with it; a terminal status clears the job's token and wakes its waiters."""
        if status not in TRANSITIONS[job.status]:
            raise ConflictError(f"job {job.job_id} cannot go from {job.status} to {status}")
        if status in TERMINAL:  # the job's own token dies with it; a sub-status only lives
            fields.setdefault("token_hash", None)  # while RUNNING
        if status is not JobStatus.RUNNING:
            fields.setdefault("sub_status", None)
        event = {k: fields[k] for k in ("exit_code",) if k in fields}
        updated = self.store.set_job_status(job.job_id, status, time.time(), event, **fields)
        if status in TERMINAL:
            waiter = self._terminal.pop(job.job_id, None)
            if waiter is not None:
                waiter.set()
        return updated

    # -- starting ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start queued jobs, oldest first, while their users are under the limit."""
        if self._closing or self._store is None:
            return
        again: list[tuple[int, str, float]] = []
        while (picked := self._queue.next_entry()) is not None:
            user_id, job_id, _ = picked
            try:
                self._start(job_id)
            except (sqlite3.Error, OSError) as exc:  # a full or failing disk: later
                _log.warning("could not start job %s: %s; trying again", job_id, exc)
                self._queue.ended(user_id)
                again.append(picked)
            except Exception as exc:
                _log.exception("could not start job %s", job_id)
                self._queue.ended(user_id)
                if not self._fail_unstarted(job_id, exc):
                    again.append(picked)
        for entry in reversed(again):  # (after the loop, so not picked again at once)
            self._queue.put_back(*entry)
        if again and self._start_retry is None:
            self._start_retry = asyncio.get_running_loop().call_later(
                _START_RETRY_S, self._retry_dispatch)

    def _retry_dispatch(self) -> None:
        self._start_retry = None
        self._dispatch()

    def _fail_unstarted(self, job_id: str, exc: Exception) -> bool:
        """Store a job that could not be started FAILED with why; False if that failed too."""
        try:
            job = self.store.job(job_id)
            if job is not None and job.status is JobStatus.QUEUED:
                self.set_status(job, JobStatus.FAILED, finished_at=time.time(),
                                error=f"the gateway could not start this job: {exc}")
        except (sqlite3.Error, OSError):
            return False
        return True

    def _start(self, job_id: str) -> None:
        """Start a job ``next_job`` gave. Everything that can fail comes before the job is
        stored RUNNING; after that, it is supervised."""
        job = self.store.job(job_id)
        if job is None or job.status is not JobStatus.QUEUED:  # stopped meanwhile
            if job is not None:
                self._queue.ended(job.user_id)
            return
        program = self.store.program_by_id(job.program_id)
        now = time.time()
        try:
            sandbox = self._sandbox()
        except ForbiddenError as exc:  # a second user appeared and nothing can keep them apart
            self.set_status(job, JobStatus.FAILED, finished_at=now, error=str(exc))
            self._queue.ended(job.user_id)  # (once stored: a failed write is ended once)
            return
        token = new_token()
        credential = credential_id = None
        if self._link is not None:
            credential, credential_id = self._link.credential(
                f"{self._gateway_id}.{job.user_id}", job.job_id,
                now + self.config.job_credential_ttl_s)
        user = self.store.user_by_id(job.user_id)
        spec = JobSpec(
            job.job_id, program.entrypoint, b"", program.env_vars, b"",
            self.store.job_formats(job.job_id)[0], token,
            self._data_path(job.user_id, program.title),
            user_name=user.name if user is not None else "", sandbox=sandbox,
            cluster_token=credential,
            load_inputs=functools.partial(load_job_inputs, db_path(self.config.data_dir),
                                          job.program_id, job.job_id),
        )
        job = self.set_status(job, JobStatus.RUNNING, started_at=now,
                              token_hash=hash_token(token), credential=credential_id)
        # Registered with the runner now, so a stop() before the task first runs reaches it.
        running = self.runner.run(spec, lambda pid: self._note_pid(job.job_id, pid))
        self._tasks[job.job_id] = asyncio.create_task(
            self._supervise(job, running, credential_id), name=f"qsrv-job-{job.job_id}")

    def _note_pid(self, job_id: str, pid: int) -> None:
        with contextlib.suppress(sqlite3.Error):  # a full disk: the pid is only informative
            self.store.set_job_fields(job_id, pid=pid)

    def _data_path(self, user_id: int, title: str) -> Path | None:
        try:
            return self._files.folder(user_id, title)
        except InvalidRequestError:  # a title that cannot name a folder ("..", too long)
            return None

    # -- ending --------------------------------------------------------------------------------

    async def _supervise(self, job: JobRecord, running: Coroutine[Any, Any, JobOutcome],
                         credential_id: str | None) -> None:
        try:
            outcome = await running
        except Exception:
            _log.exception("supervising job %s failed", job.job_id)
            outcome = JobOutcome("failed", None, "the gateway failed to supervise the job:\n"
                                 + traceback.format_exc(), None, b"")
        stored = False
        try:
            if credential_id is not None and self._link is not None:
                self._link.revoke(credential_id)
            stored = await self._record_end(job.job_id, job.user_id, outcome)
        finally:
            del self._tasks[job.job_id]
            if stored or job.job_id not in self._unsaved:
                self._ended(job.user_id)
            # else: still RUNNING in the store, so still counted; _store_later ends it

    def _ended(self, user_id: int) -> None:
        """A job of the user is stored ended (or never will be): another may start."""
        self._queue.ended(user_id)
        self._dispatch()

    async def _record_end(self, job_id: str, user_id: int, outcome: JobOutcome) -> bool:
        """Store how the job ended; retry a failing write (a full disk), then store it FAILED
        with the reason, without its result (``_fallbacks``); keep retrying that in the
        background (False: it is not stored yet)."""
        error: Exception | None = None
        for delay in (0.0, *self._final_write_retries_s):
            if delay:
                await asyncio.sleep(delay)
            try:
                self._finish(job_id, outcome)
                return True
            except (sqlite3.Error, OSError) as exc:
                error = exc
                _log.warning("could not store the end of job %s: %s", job_id, exc)
        fallbacks = _fallbacks(outcome, error)
        if self._store_fallback(job_id, fallbacks):
            return True
        _log.error("cannot store the end of job %s; retrying every %g s", job_id,
                   _UNSAVED_RETRY_S)
        self._unsaved[job_id] = asyncio.create_task(
            self._store_later(job_id, user_id, fallbacks), name=f"qsrv-job-end-{job_id}")
        return False

    def _store_fallback(self, job_id: str, fallbacks: list[tuple[JobOutcome, bool]]) -> bool:
        """Store the first of ``fallbacks`` the store takes; False if it takes none."""
        for fallback, keep_saved_logs in fallbacks:
            try:
                self._finish(job_id, fallback, keep_saved_logs=keep_saved_logs)
                return True
            except (sqlite3.Error, OSError):
                continue
        return False

    async def _store_later(self, job_id: str, user_id: int,
                           fallbacks: list[tuple[JobOutcome, bool]]) -> None:
        """Retry storing the job's end until it holds; only then does it stop counting as one
        of its user's running jobs (it shows RUNNING until then)."""
        try:
            while True:
                await asyncio.sleep(_UNSAVED_RETRY_S)
                if self._store_fallback(job_id, fallbacks):
                    break
        finally:
            self._unsaved.pop(job_id, None)
        self._ended(user_id)

    def _finish(self, job_id: str, outcome: JobOutcome, *, keep_saved_logs: bool = False) -> None:
        """Store the job's end (``keep_saved_logs``: leave its stored output as it is)."""
        job = self.store.job(job_id)
        if job is None or job.status in TERMINAL:
            return
        common: dict[str, Any] = {"finished_at": time.time(), "exit_code": outcome.exit_code}
        if not keep_saved_logs:
            common["logs"] = outcome.logs
        if outcome.kind == "succeeded":
            self.set_status(job, JobStatus.SUCCEEDED, result=outcome.result,
                            result_format=outcome.result_format, **common)
        elif outcome.kind == "failed":
            self.set_status(job, JobStatus.FAILED, error=outcome.error, **common)
        elif job.status is JobStatus.STOPPING:
            self.set_status(job, JobStatus.STOPPED, **common)
        else:  # stopped by no user: the gateway is shutting down
            self.set_status(job, JobStatus.FAILED, error=RESTART_ERROR, **common)

    async def _flush_logs_forever(self) -> None:
        """Copy running jobs' output to the store now and then, so a crash loses little."""
        flushed: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.config.log_flush_interval_s)
            live_ids = set(self.runner.running())
            for job_id in live_ids:
                buffer = self.runner.live_logs(job_id)
                if buffer is not None and flushed.get(job_id) != buffer.generation:
                    try:
                        self.store.set_job_fields(job_id, logs=buffer.getvalue())
                    except sqlite3.Error as exc:  # a full disk: try again next time
                        _log.warning("could not save the output of job %s: %s", job_id, exc)
                        continue
                    flushed[job_id] = buffer.generation
            for job_id in set(flushed) - live_ids:
                del flushed[job_id]


def _fallbacks(outcome: JobOutcome, error: Exception | None) -> list[tuple[JobOutcome, bool]]:
    """How to store FAILED a job whose own end could not be stored, best first, each with
    whether to leave the output saved while it ran as it is: with all its output (it may fit
    where the result did not); keeping the output saved while it ran; and, on a disk too full
    to rewrite even that (SQLite rewrites a whole row), with only the tail of its output, or
    none, so that the job is not left RUNNING."""
    def failed(lost: str, logs: bytes) -> JobOutcome:
        reason = f"the gateway could not store this job's outcome ({error}): {how}; {lost}"
        return JobOutcome("failed", outcome.exit_code, reason, None, logs)

    if outcome.kind == "succeeded":
        how = "it had succeeded"
    elif outcome.kind == "stopped":
        how = "it had been stopped"
    elif outcome.exit_code is not None:
        how = f"it had failed (exit code {outcome.exit_code})"
    else:
        how = "it had failed"
    tail = outcome.logs[-_TAIL_BYTES:]
    return [
        (failed("its result was lost", outcome.logs), False),
        (failed("its result and its output since the last save were lost (the output saved "
                "before is kept)", b""), True),
        (failed(f"its result and all but the last {len(tail)} bytes of its output were lost "
                "(the disk had no room to keep them)", tail), False),
        (failed("its result and its output were lost (the disk had no room to keep them)",
                b""), False),
    ]
