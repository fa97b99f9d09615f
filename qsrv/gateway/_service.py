"""The gateway's one service layer: every front door (HTTP routes) calls these methods.

``GatewayService`` owns the store and the job runner. Invariants:

- Every method that takes a ``user`` only ever sees that user's programs and jobs: another
  user's job is reported as missing (NotFoundError), so its existence does not leak either.
- A job's status changes only in ``_set_status``, which checks ``TRANSITIONS``, writes the row
  and its event together, and wakes the job's waiters. A status the service reports is the one
  stored.
- A job is RUNNING or STOPPING in the store only while this service supervises it (``_tasks``).
  At start, jobs left RUNNING or STOPPING by a previous gateway are ended (FAILED, or STOPPED if
  a stop had been asked) after killing any of their processes still alive; QUEUED jobs stay
  queued and run. No job is left RUNNING forever.
- At most ``max_jobs_per_user`` jobs of a user run at once; the rest wait QUEUED, oldest first.
- The service never unpickles arguments or results: they are bytes from the client to the job
  and from the job to the client. They are a pickle (qsrv's client) or JSON text (the Quantum
  Serverless door, ``_upstream_http``); a JSON result asked for as a pickle is pickled from its
  plain JSON value, never the other way round.
- A running job holds a token of its own (only its hash is stored), valid for calling back about
  that job only while it is RUNNING or STOPPING, and cleared when it ends.
- All methods run on the gateway's event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pickle
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qsrv.errors import ConfigError
from qsrv.gateway._archive import ArchiveLimits, check_entrypoint, inspect_archive
from qsrv.gateway._errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from qsrv.gateway._models import (
    TERMINAL,
    TRANSITIONS,
    JobEvent,
    JobRecord,
    JobStatus,
    ProgramVersion,
    User,
)
from qsrv.gateway._passwords import MAX_LENGTH, dummy_hash, verify_password
from qsrv.gateway._runner import JobOutcome, JobRunner, JobSpec, RunnerConfig, kill_orphans
from qsrv.gateway._store import FORMATS, Store
from qsrv.gateway._upstream_files import UserFiles
from qsrv.gateway._users import db_path, hash_token, issue_token, new_token

__all__ = ["GatewayConfig", "GatewayService"]

_log = logging.getLogger("qsrv.gateway")
_TITLE_MAX = 200
_ENV_NAME_MAX = 256
RESTART_ERROR = (
    "the gateway stopped while this job was running; the job was ended and can be run again"
)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything a gateway needs; the CLI and the local cluster build one."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7421
    cluster_address: str | None = None
    cluster_token: str | None = None
    max_jobs_per_user: int = 4
    max_arguments_bytes: int = 16 << 20
    max_log_bytes: int = 1 << 20
    max_result_bytes: int = 64 << 20
    stop_grace_s: float = 5.0
    log_flush_interval_s: float = 1.0
    keep_sandboxes: bool = False
    archive_limits: ArchiveLimits = field(default_factory=ArchiveLimits)

    def runner_config(self) -> RunnerConfig:
        return RunnerConfig(
            root=self.data_dir / "jobs",
            cluster_address=self.cluster_address,
            cluster_token=self.cluster_token,
            max_log_bytes=self.max_log_bytes,
            max_result_bytes=self.max_result_bytes,
            stop_grace_s=self.stop_grace_s,
            keep_sandboxes=self.keep_sandboxes,
            archive_limits=self.archive_limits,
        )


class GatewayService:
    """Users, programs and jobs. ``await start()`` before use, ``await close()`` after."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.runner = JobRunner(config.runner_config())
        self._store: Store | None = None
        self._lock_fd: int | None = None
        self._tasks: dict[str, tuple[int, asyncio.Task[None]]] = {}  # job_id -> (user, task)
        self._terminal: dict[str, asyncio.Event] = {}  # set when the job becomes terminal
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.files = UserFiles(config.data_dir / "files", config.archive_limits.max_archive_bytes)
        if config.port:
            host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.host,
                                                                            config.host)
            self.gateway_url = f"http://[{host}]:{config.port}" if ":" in host \
                else f"http://{host}:{config.port}"

    @property
    def gateway_url(self) -> str | None:
        """Where jobs reach this gateway; known from the config, or from the first request when
        the port was chosen by the system (``port=0``)."""
        return self.runner.gateway_url

    @gateway_url.setter
    def gateway_url(self, url: str) -> None:
        self.runner.gateway_url = url

    @property
    def store(self) -> Store:
        if self._store is None:
            raise ConfigError("the gateway service is not started")
        return self._store

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_data_dir(self.config.data_dir)
        try:
            self._store = Store.open(db_path(self.config.data_dir))
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        self._flusher = asyncio.create_task(self._flush_logs_forever())
        self._dispatch()

    async def close(self) -> None:
        """Stop running jobs (they end FAILED: the gateway stopped), keep queued ones queued."""
        self._closing = True
        self.runner.stop_all()
        tasks = [task for _, task in self._tasks.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _recover(self) -> None:
        now = time.time()
        left = self.store.jobs_with_status(JobStatus.RUNNING, JobStatus.STOPPING)
        killed = kill_orphans({job.job_id for job in left})
        for job in left:
            if job.job_id in killed:
                _log.warning("killed %d leftover processes of job %s", killed[job.job_id],
                             job.job_id)
            if job.status is JobStatus.STOPPING:
                self._set_status(job, JobStatus.STOPPED, finished_at=now)
            else:
                self._set_status(job, JobStatus.FAILED, finished_at=now, error=RESTART_ERROR)

    # -- users ---------------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> User:
        if not token:
            raise UnauthorizedError("this request needs a token (Authorization: Bearer TOKEN)")
        user = self.store.user_for_token(hash_token(token))
        if user is None:
            raise UnauthorizedError("unknown token")
        return user

    def authenticate_job(self, token: str | None, job_id: str) -> JobRecord:
        """The job ``job_id`` if ``token`` is its own token or its owner's; for the calls a job
        makes about itself (sub-status, error events)."""
        job = self.store.job_for_token(hash_token(token)) if token else None
        if job is not None and job.job_id == job_id:
            if job.status not in (JobStatus.RUNNING, JobStatus.STOPPING):
                raise UnauthorizedError(f"job {job_id} has ended; its token is no longer valid")
            return job
        return self.job(self.authenticate(token), job_id)

    async def login(self, name: str, password: str) -> str:
        """A new token for the user if the password is theirs (UnauthorizedError otherwise)."""
        found = self.store.password_hash(name) if name and len(password) <= MAX_LENGTH else None
        stored = found[1] if found is not None else dummy_hash()
        valid = await asyncio.to_thread(verify_password, password, stored)
        if found is None or not valid:
            raise UnauthorizedError("unknown user name or wrong password")
        return issue_token(self.store, found[0])

    # -- programs ------------------------------------------------------------------------------

    def upload_program(
        self, user: User, *, title: str, entrypoint: str, archive: bytes,
        env_vars: dict[str, str] | None = None, description: str = "",
    ) -> ProgramVersion:
        """Store a new version of the user's program ``title`` (version 1 for a new title)."""
        if not title or len(title) > _TITLE_MAX or not title.isprintable() or "/" in title:
            raise InvalidRequestError(
                f"bad title {title!r}: 1 to {_TITLE_MAX} printable characters, no '/'"
            )
        env = _check_env_vars(env_vars or {})
        members = inspect_archive(archive, self.config.archive_limits)
        entry = check_entrypoint(entrypoint, members)
        return self.store.add_program_version(
            user.user_id, title, entry, description, env, archive,
            hashlib.sha256(archive).hexdigest(), time.time(),
        )

    def programs(self, user: User) -> list[ProgramVersion]:
        return self.store.list_programs(user.user_id)

    def program_versions(self, user: User, title: str) -> list[ProgramVersion]:
        versions = self.store.list_program_versions(user.user_id, title)
        if not versions:
            raise NotFoundError(f"no program titled {title!r}")
        return versions

    # -- jobs ----------------------------------------------------------------------------------

    def submit_job(self, user: User, title: str, arguments: bytes,
                   version: int | None = None, *, arguments_format: str = "pickle",
                   ) -> JobRecord:
        """Queue a run of the program (its latest version unless ``version``) with
        ``arguments`` (a pickle, or JSON text of an object with ``arguments_format="json"``);
        it starts as soon as the user is under the concurrency limit."""
        if len(arguments) > self.config.max_arguments_bytes:
            raise PayloadTooLargeError(
                f"arguments are {len(arguments)} bytes, over the limit of "
                f"{self.config.max_arguments_bytes}"
            )
        if arguments_format not in FORMATS:
            raise InvalidRequestError(f"unknown arguments format {arguments_format!r}")
        if arguments_format == "json":
            try:
                plain = json.loads(arguments)
            except (ValueError, RecursionError):
                raise InvalidRequestError("arguments must be JSON text") from None
            if not isinstance(plain, dict):
                raise InvalidRequestError("arguments must be a JSON object")
        program = self.store.program_version(user.user_id, title, version)
        if program is None:
            which = f"{title!r}" if version is None else f"{title!r} version {version}"
            raise NotFoundError(f"no program {which}")
        job = self.store.create_job(
            uuid.uuid4().hex, user.user_id, program.program_id, arguments, time.time(),
            arguments_format,
        )
        self._dispatch()
        return self.store.job(job.job_id) or job

    def job(self, user: User, job_id: str) -> JobRecord:
        job = self.store.job(job_id)
        if job is None or job.user_id != user.user_id:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    def jobs(self, user: User, *, limit: int = 10, offset: int = 0,
             statuses: Sequence[JobStatus] = (), created_after: float | None = None,
             title: str | None = None) -> tuple[list[JobRecord], int]:
        """A page of the user's jobs (of program ``title`` if given), newest first, and the
        count of all that match."""
        if not 0 < limit <= 1000 or offset < 0:
            raise InvalidRequestError("limit must be in 1..1000 and offset >= 0")
        return self.store.list_jobs(user.user_id, limit=limit, offset=offset,
                                    statuses=statuses, created_after=created_after, title=title)

    def logs(self, user: User, job_id: str) -> bytes:
        """The job's output so far (all of it, up to the cap, once it has ended)."""
        self.job(user, job_id)
        live = self.runner.live_logs(job_id)
        return live.getvalue() if live is not None else self.store.job_logs(job_id)

    def result(self, user: User, job_id: str) -> bytes | None:
        """The pickled result of a SUCCEEDED job, None when it saved none."""
        job = self.job(user, job_id)
        if job.status is not JobStatus.SUCCEEDED:
            raise ConflictError(f"job {job_id} is {job.status}, it has no result")
        result = self.store.job_result(job_id)
        if result is not None and self.store.job_formats(job_id)[1] == "json":
            try:
                return pickle.dumps(json.loads(result), protocol=5)
            except (ValueError, RecursionError):
                raise ConflictError(f"job {job_id} saved a result that is not JSON") from None
        return result

    def result_json(self, user: User, job_id: str) -> str | None:
        """The JSON text of a SUCCEEDED job's result, None when it saved none. A result saved
        as a pickle (qsrv's ``save_result``) is a ConflictError: it is never unpickled here."""
        job = self.job(user, job_id)
        if job.status is not JobStatus.SUCCEEDED:
            raise ConflictError(f"job {job_id} is {job.status}, it has no result")
        result = self.store.job_result(job_id)
        if result is None:
            return None
        if self.store.job_formats(job_id)[1] != "json":
            raise ConflictError(
                f"job {job_id} saved its result with qsrv's save_result (a pickle), which only "
                "qsrv's client reads; save it as JSON (qiskit_serverless.save_result) to read it "
                "here"
            )
        return result.decode("utf-8", "replace")

    def set_sub_status(self, job: JobRecord, sub_status: str) -> None:
        """Record what a RUNNING job says it is doing (a Quantum Serverless sub-status)."""
        if job.status is not JobStatus.RUNNING:
            raise ConflictError(f"job {job.job_id} is {job.status}, not RUNNING")
        self.store.set_job_fields(job.job_id, sub_status=sub_status)

    def add_event(self, job: JobRecord, kind: str, data: dict[str, Any]) -> None:
        """Record an event a job reported about itself (e.g. ``error``)."""
        self.store.add_job_event(job.job_id, kind, data, time.time())

    def events(self, user: User, job_id: str, after: int = 0) -> list[JobEvent]:
        self.job(user, job_id)
        return self.store.job_events(job_id, after)

    async def wait(self, user: User, job_id: str, timeout: float | None) -> JobRecord:
        """The job once it is terminal, or as it is when ``timeout`` seconds have passed."""
        job = self.job(user, job_id)
        if job.status in TERMINAL:
            return job
        event = self._terminal.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self.job(user, job_id)

    async def stop(self, user: User, job_id: str, timeout: float | None = None) -> JobRecord:
        """Stop the job and wait (up to ``timeout``) until it is terminal.

        A queued job becomes STOPPED at once and never starts. A running one becomes STOPPING,
        its process group is terminated, and it becomes STOPPED once the tree is gone. Stopping
        a terminal job changes nothing.
        """
        job = self.job(user, job_id)
        if job.status is JobStatus.QUEUED:
            return self._set_status(job, JobStatus.STOPPED, finished_at=time.time())
        if job.status is JobStatus.RUNNING:
            job = self._set_status(job, JobStatus.STOPPING)
            self.runner.stop(job_id)
        if job.status in TERMINAL:
            return job
        return await self.wait(user, job_id, timeout)

    # -- running -------------------------------------------------------------------------------

    def _set_status(self, job: JobRecord, status: JobStatus, **fields: Any) -> JobRecord:
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

    def _dispatch(self) -> None:
        """Start queued jobs, oldest first, while their users are under the limit."""
        if self._closing or self._store is None:
            return
        running = Counter(user_id for user_id, _ in self._tasks.values())
        for job in self.store.jobs_with_status(JobStatus.QUEUED):
            if running[job.user_id] >= self.config.max_jobs_per_user:
                continue
            running[job.user_id] += 1
            self._start(job)

    def _start(self, job: JobRecord) -> None:
        program = self.store.program_by_id(job.program_id, with_archive=True)
        token = new_token()
        spec = JobSpec(job.job_id, program.entrypoint, program.archive, program.env_vars,
                       self.store.job_arguments(job.job_id),
                       self.store.job_formats(job.job_id)[0], token,
                       self._data_path(job.user_id, program.title))
        job = self._set_status(job, JobStatus.RUNNING, started_at=time.time(),
                               token_hash=hash_token(token))
        # Registered with the runner now, so a stop() before the task first runs reaches it.
        running = self.runner.run(spec, lambda pid: self.store.set_job_fields(job.job_id, pid=pid))
        task = asyncio.create_task(self._supervise(job, running), name=f"qsrv-job-{job.job_id}")
        self._tasks[job.job_id] = (job.user_id, task)

    def _data_path(self, user_id: int, title: str) -> Path | None:
        try:
            return self.files.folder(user_id, title)
        except InvalidRequestError:  # a title that cannot name a folder ("..", too long)
            return None

    async def _supervise(self, job: JobRecord,
                         running: Coroutine[Any, Any, JobOutcome]) -> None:
        try:
            outcome = await running
        except Exception:
            _log.exception("supervising job %s failed", job.job_id)
            outcome = JobOutcome("failed", None, "the gateway failed to supervise the job:\n"
                                 + traceback.format_exc(), None, b"")
        try:
            self._finish(job.job_id, outcome)
        finally:
            del self._tasks[job.job_id]
            self._dispatch()

    def _finish(self, job_id: str, outcome: JobOutcome) -> None:
        job = self.store.job(job_id)
        assert job is not None
        common: dict[str, Any] = {"finished_at": time.time(), "exit_code": outcome.exit_code,
                                  "logs": outcome.logs}
        if outcome.kind == "succeeded":
            self._set_status(job, JobStatus.SUCCEEDED, result=outcome.result,
                             result_format=outcome.result_format, **common)
        elif outcome.kind == "failed":
            self._set_status(job, JobStatus.FAILED, error=outcome.error, **common)
        elif job.status is JobStatus.STOPPING:
            self._set_status(job, JobStatus.STOPPED, **common)
        else:  # stopped by no user: the gateway is shutting down
            self._set_status(job, JobStatus.FAILED, error=RESTART_ERROR, **common)

    async def _flush_logs_forever(self) -> None:
        """Copy running jobs' output to the store now and then, so a crash loses little."""
        flushed: dict[str, int] = {}
        while True:
            await asyncio.sleep(self.config.log_flush_interval_s)
            live_ids = set(self.runner.running())
            for job_id in live_ids:
                buffer = self.runner.live_logs(job_id)
                if buffer is not None and flushed.get(job_id) != buffer.generation:
                    self.store.set_job_fields(job_id, logs=buffer.getvalue())
                    flushed[job_id] = buffer.generation
            for job_id in set(flushed) - live_ids:
                del flushed[job_id]


def _check_env_vars(env_vars: dict[str, str]) -> dict[str, str]:
    for name, value in env_vars.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidRequestError("env_vars must map strings to strings")
        if not name or len(name) > _ENV_NAME_MAX or "=" in name or "\x00" in name + value:
            raise InvalidRequestError(f"bad environment variable name {name!r}")
    return dict(env_vars)


def _lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on the data dir for as long as the fd stays open."""
    fd = os.open(data_dir / "gateway.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"another gateway is using the data directory {data_dir}"
        ) from None
    return fd
