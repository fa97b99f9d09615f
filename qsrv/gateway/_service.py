"""The gateway's one service layer: every front door (HTTP routes) calls these methods.

``GatewayService`` owns the store and the job runner. Invariants:

- Every method that takes a ``user`` only ever sees that user's programs and jobs: another
  user's job is reported as missing (NotFoundError), so its existence does not leak either.
- A job's status changes only in ``_set_status``, which checks ``TRANSITIONS``, writes the row
  and its event together, and wakes the job's waiters. A status the service reports is the one
  stored.
- A job is RUNNING or STOPPING in the store only while this service supervises it (``_tasks``).
  At start, jobs left RUNNING or STOPPING by a previous gateway are ended (FAILED, or STOPPED if
  a stop had been asked) after killing any of their processes still alive, and every job
  directory left on disk is removed; QUEUED jobs stay queued and run. When a job's final write
  fails (a full disk), it is retried, then the job is stored FAILED with the reason, without
  its result; no job is left RUNNING or STOPPING.
- At most ``max_jobs_per_user`` jobs of a user run at once; the rest wait QUEUED, oldest first
  (``JobQueue``: a submission costs O(log n) whatever the queue's length). A user has at most
  ``max_queued_jobs_per_user`` queued jobs, ``max_programs_per_user`` programs,
  ``max_versions_per_program`` versions of one, and stores at most
  ``max_stored_bytes_per_user`` (archives and files); past a quota: TooManyRequestsError (429).
- Jobs run in a sandbox (``_sandbox``): the one chosen, or with ``auto`` none while the gateway
  has one user and bubblewrap once it has more; jobs are refused, with how to choose, when
  several users exist and no sandbox can run.
- A job never gets the cluster token: it gets a credential derived for it (``_cluster``),
  accepted only as a driver of its user's tenant, revoked when the job ends.
- Archives are checked, hashed and written off the event loop, at most ``archive_workers`` at
  once; the loop only waits for the answer.
- Password logins are throttled per user name and per address (``_throttle``); login tokens
  expire after ``login_token_ttl_s``; revoked and expired tokens are refused.
- The service never unpickles arguments or results: they are bytes from the client to the job
  and from the job to the client. They are a pickle (qsrv's client) or JSON text (the Quantum
  Serverless door, ``_upstream_http``); a JSON result asked for as a pickle is pickled from its
  plain JSON value, never the other way round.
- A running job holds a token of its own (only its hash is stored), valid for calling back about
  that job only while it is RUNNING or STOPPING, and cleared when it ends.
- The data directory is private (0700; 0711 when jobs run as OS accounts) and so is everything
  in it.
- All methods run on the gateway's event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import pickle
import secrets
import shutil
import sqlite3
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from qsrv.errors import ConfigError
from qsrv.gateway._archive import ArchiveLimits, check_entrypoint, inspect_archive
from qsrv.gateway._cluster import ClusterLink
from qsrv.gateway._errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
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
from qsrv.gateway._quantum import QuantumConfig, QuantumService
from qsrv.gateway._queue import JobQueue
from qsrv.gateway._runner import JobOutcome, JobRunner, JobSpec, RunnerConfig, kill_orphans
from qsrv.gateway._sandbox import CHOICES, HOW_TO_CHOOSE, Sandbox, make_sandbox
from qsrv.gateway._store import ARCHIVES, FORMATS, Quota, Store, load_job_inputs, private_dir
from qsrv.gateway._throttle import LoginThrottle, ThrottleRules
from qsrv.gateway._upstream_files import UserFiles
from qsrv.gateway._users import db_path, hash_token, issue_token, new_token

__all__ = ["GatewayConfig", "GatewayService"]

_log = logging.getLogger("qsrv.gateway")
_T = TypeVar("_T")
_TITLE_MAX = 200
_ENV_NAME_MAX = 256
_FINAL_WRITE_RETRIES_S = (0.2, 1.0, 3.0)  # waits before retrying a job's final write
_UNSAVED_RETRY_S = 5.0
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
    job_sandbox: str = "auto"  # see _sandbox: auto, bwrap, users, none
    job_python: str = sys.executable
    max_queued_jobs_per_user: int = 1000
    max_stored_bytes_per_user: int = 4 << 30
    max_programs_per_user: int = 100
    max_versions_per_program: int = 100
    login_failures_per_user: int = 5  # before back-off
    login_failures_per_address: int = 20
    login_backoff_max_s: float = 300.0
    login_token_ttl_s: float = 24 * 3600.0
    job_credential_ttl_s: float = 7 * 86400.0
    archive_workers: int = 2
    quantum_batch_timeout_s: float = 600.0  # an open batch idle this long: TIMED_OUT

    def runner_config(self) -> RunnerConfig:
        return RunnerConfig(
            root=self.data_dir / "jobs",
            cluster_address=self.cluster_address,
            max_log_bytes=self.max_log_bytes,
            max_result_bytes=self.max_result_bytes,
            stop_grace_s=self.stop_grace_s,
            keep_sandboxes=self.keep_sandboxes,
            archive_limits=self.archive_limits,
            python=self.job_python,
        )

    def quotas(self) -> dict[str, int]:
        """The per-user quotas, as ``qsrv user list`` shows them."""
        return {"queued_jobs": self.max_queued_jobs_per_user,
                "stored_bytes": self.max_stored_bytes_per_user,
                "programs": self.max_programs_per_user,
                "versions_per_program": self.max_versions_per_program,
                "running_jobs": self.max_jobs_per_user}


class GatewayService:
    """Users, programs and jobs. ``await start()`` before use, ``await close()`` after."""

    def __init__(self, config: GatewayConfig) -> None:
        if config.job_sandbox not in CHOICES:
            raise ConfigError(f"unknown job sandbox {config.job_sandbox!r}: one of "
                              f"{', '.join(CHOICES)}")
        self.config = config
        self.runner = JobRunner(config.runner_config())
        self._store: Store | None = None
        self._lock_fd: int | None = None
        self._tasks: dict[str, tuple[int, asyncio.Task[None]]] = {}  # job_id -> (user, task)
        self._terminal: dict[str, asyncio.Event] = {}  # set when the job becomes terminal
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._queue = JobQueue(config.max_jobs_per_user)
        self._throttle = LoginThrottle(
            ThrottleRules(config.login_failures_per_user, max_s=config.login_backoff_max_s),
            ThrottleRules(config.login_failures_per_address, max_s=config.login_backoff_max_s))
        self._pool = ThreadPoolExecutor(max(1, config.archive_workers),
                                        thread_name_prefix="qsrv-archive")
        self._sandbox: Sandbox | None = None  # the chosen one (None: auto)
        self._bwrap: Sandbox | None = None  # auto's sandbox for several users
        self._bwrap_error = ""  # why auto cannot sandbox, if it cannot
        self._unsaved: dict[str, asyncio.Task[None]] = {}  # jobs whose end is not stored yet
        self._link: ClusterLink | None = None
        self.gateway_id = ""
        if config.cluster_address and config.cluster_token:
            self._link = ClusterLink(config.cluster_address, config.cluster_token,
                                     self._recent_credentials)
        self.files = UserFiles(config.data_dir / "files", config.archive_limits.max_archive_bytes)
        self.quantum = QuantumService(QuantumConfig(
            cluster_address=config.cluster_address, cluster_token=config.cluster_token,
            batch_timeout_s=config.quantum_batch_timeout_s))
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
        data_dir = self.config.data_dir
        private_dir(data_dir)
        self._lock_fd = _lock_data_dir(data_dir)
        try:
            self._store = Store.open(db_path(data_dir))
            await self._choose_sandbox()
            self._secure_layout()
            self._settings()
            self._recover()
            await self.quantum.start(self.store)
        except BaseException:
            if self._store is not None:
                self._store.close()
                self._store = None
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        self._flusher = asyncio.create_task(self._flush_logs_forever())
        if self._link is not None:
            self._link.start()
        self._dispatch()

    async def close(self) -> None:
        """Stop running jobs (they end FAILED: the gateway stopped), keep queued ones queued."""
        self._closing = True
        await self.quantum.close()
        self.runner.stop_all()
        tasks = [task for _, task in self._tasks.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for retry in list(self._unsaved.values()):
            retry.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._link is not None:
            await self._link.flush(2.0)  # the ended jobs' credentials, revoked now if it can
            await self._link.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _choose_sandbox(self) -> None:
        config = self.config
        choice = config.job_sandbox
        users = self.store.user_count()
        if choice != "auto":
            sandbox = make_sandbox(choice, data_dir=config.data_dir,
                                   cluster_address=config.cluster_address,
                                   python=config.job_python)
            await asyncio.to_thread(sandbox.check)
            self._sandbox = sandbox
            if not sandbox.isolates and users > 1:
                _log.warning("jobs run without a sandbox (--job-sandbox none) and this gateway "
                             "has %d users: a job can read every user's data", users)
            return
        bwrap = make_sandbox("bwrap", data_dir=config.data_dir,
                             cluster_address=config.cluster_address, python=config.job_python)
        try:
            await asyncio.to_thread(bwrap.check)
        except ConfigError as exc:
            self._bwrap_error = str(exc)
        else:
            self._bwrap = bwrap
        if users > 1 and self._bwrap is None:
            raise ConfigError(self._refusal(users))

    def _refusal(self, users: int) -> str:
        return (f"this gateway has {users} users and no sandbox to keep their jobs apart "
                f"(bubblewrap: {self._bwrap_error.split(';')[0]}); " + HOW_TO_CHOOSE)

    def _job_sandbox(self) -> Sandbox:
        """The sandbox a job starting now runs in; ForbiddenError when none may be used."""
        if self._sandbox is not None:
            return self._sandbox
        users = self.store.user_count()
        if users <= 1:
            return _NONE
        if self._bwrap is None:
            raise ForbiddenError(self._refusal(users))
        return self._bwrap

    def _secure_layout(self) -> None:
        """Modes of the data directory and the folders jobs reach (see the module's doc)."""
        data_dir = self.config.data_dir
        mode = self._sandbox.data_dir_mode if self._sandbox is not None else 0o700
        if os.stat(data_dir).st_uid == os.geteuid():
            os.chmod(data_dir, mode)
        for sub in ("jobs", "files", ARCHIVES):
            path = private_dir(data_dir / sub, mode)
            if os.stat(path).st_uid == os.geteuid():
                os.chmod(path, mode if sub != ARCHIVES else 0o700)
        self.files.root_mode = mode

    def _settings(self) -> None:
        store = self.store
        gateway_id = store.setting("gateway_id")
        if not isinstance(gateway_id, str):
            gateway_id = secrets.token_hex(6)
            store.set_setting("gateway_id", gateway_id)
        self.gateway_id = gateway_id
        store.set_setting("quotas", self.config.quotas())
        store.delete_dead_tokens(time.time() - 30 * 86400)

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
        # Nothing runs yet: every job directory on disk belongs to an ended job.
        root = self.config.runner_config().root
        with contextlib.suppress(FileNotFoundError), os.scandir(root) as entries:
            stale = [Path(e.path) for e in entries]
        for path in stale if root.is_dir() else []:
            shutil.rmtree(path, ignore_errors=True)
        for job in self.store.jobs_with_status(JobStatus.QUEUED):
            self._queue.add(job.user_id, job.job_id, job.created_at)

    def _recent_credentials(self) -> list[str]:
        """Credentials of jobs that ended while a credential could still be valid."""
        if self._store is None:
            return []
        return self.store.credentials_ended_since(time.time() - self.config.job_credential_ttl_s)

    async def _off_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run blocking work (archives) in the bounded pool; the loop only awaits it."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(fn, *args))

    # -- users ---------------------------------------------------------------------------------

    def authenticate(self, token: str | None) -> User:
        if not token:
            raise UnauthorizedError("this request needs a token (Authorization: Bearer TOKEN)")
        token_hash = hash_token(token)
        user = self.store.user_for_token(token_hash)
        if user is None:
            why = self.store.token_state(token_hash)
            raise UnauthorizedError(f"this token {why}" if why else "unknown token")
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

    async def login(self, name: str, password: str, address: str = "") -> str:
        """A new token for the user if the password is theirs (UnauthorizedError otherwise),
        expiring after ``login_token_ttl_s``. Throttled: TooManyRequestsError while the name or
        the address ``address`` is backed off after failures."""
        self._throttle.check(name, address)
        found = self.store.password_hash(name) if name and len(password) <= MAX_LENGTH else None
        stored = found[1] if found is not None else dummy_hash()
        valid = await asyncio.to_thread(verify_password, password, stored)
        if found is None or not valid:
            self._throttle.failed(name, address)
            raise UnauthorizedError("unknown user name or wrong password")
        self._throttle.succeeded(name)
        return issue_token(self.store, found[0], expires_in=self.config.login_token_ttl_s,
                           kind="login")

    # -- programs ------------------------------------------------------------------------------

    async def upload_program(
        self, user: User, *, title: str, entrypoint: str, archive: bytes,
        env_vars: dict[str, str] | None = None, description: str = "",
    ) -> ProgramVersion:
        """Store a new version of the user's program ``title`` (version 1 for a new title).

        The archive is checked, hashed and written off the event loop."""
        if not title or len(title) > _TITLE_MAX or not title.isprintable() or "/" in title:
            raise InvalidRequestError(
                f"bad title {title!r}: 1 to {_TITLE_MAX} printable characters, no '/'"
            )
        env = _check_env_vars(env_vars or {})
        members, digest = await self._off_loop(_inspect, archive, self.config.archive_limits)
        entry = check_entrypoint(entrypoint, members)
        config = self.config
        quota = Quota(config.max_programs_per_user, config.max_versions_per_program,
                      config.max_stored_bytes_per_user)
        return await self._off_loop(
            _store_program, db_path(config.data_dir), self.files, user.user_id, title, entry,
            description, env, archive, digest, quota)

    def programs(self, user: User) -> list[ProgramVersion]:
        return self.store.list_programs(user.user_id)

    def program_versions(self, user: User, title: str) -> list[ProgramVersion]:
        versions = self.store.list_program_versions(user.user_id, title)
        if not versions:
            raise NotFoundError(f"no program titled {title!r}")
        return versions

    async def save_file(self, user: User, title: str, name: str, chunks: Any) -> int:
        """Store one of the user's files of ``title`` (streamed), within their quota."""
        held = await self._off_loop(self.files.usage, user.user_id)
        held += self.store.usage(user.user_id).archive_bytes
        room = self.config.max_stored_bytes_per_user - held
        text = (f"this file would take what you store over your quota of "
                f"{self.config.max_stored_bytes_per_user} bytes ({held} held)")
        if room <= 0:
            raise TooManyRequestsError(text)
        return await self.files.save(user.user_id, title, name, chunks, room, text)

    # -- jobs ----------------------------------------------------------------------------------

    def submit_job(self, user: User, title: str, arguments: bytes,
                   version: int | None = None, *, arguments_format: str = "pickle",
                   ) -> JobRecord:
        """Queue a run of the program (its latest version unless ``version``) with
        ``arguments`` (a pickle, or JSON text of an object with ``arguments_format="json"``);
        it starts as soon as the user is under the concurrency limit. O(log n) in the number
        of queued jobs."""
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
        queued = self._queue.queued(user.user_id)
        if queued >= self.config.max_queued_jobs_per_user:
            raise TooManyRequestsError(
                f"you have {queued} queued jobs, the most this gateway queues per user "
                f"({self.config.max_queued_jobs_per_user}); wait for some to start, or stop "
                "some")
        self._job_sandbox()  # refuses now, rather than failing the job later
        program = self.store.program_version(user.user_id, title, version)
        if program is None:
            which = f"{title!r}" if version is None else f"{title!r} version {version}"
            raise NotFoundError(f"no program {which}")
        job = self.store.create_job(
            uuid.uuid4().hex, user.user_id, program.program_id, arguments, time.time(),
            arguments_format,
        )
        self._queue.add(user.user_id, job.job_id, job.created_at)
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
            self._queue.remove(job.user_id, job.job_id)
            return self._set_status(job, JobStatus.STOPPED, finished_at=time.time())
        if job.status is JobStatus.RUNNING:
            job = self._set_status(job, JobStatus.STOPPING)
            self.runner.stop(job_id)
        if job.status in TERMINAL:
            return job
        return await self.wait(user, job_id, timeout)

    # -- running -------------------------------------------------------------------------------

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
        while (picked := self._queue.next_job()) is not None:
            user_id, job_id = picked
            try:
                self._start(job_id)
            except Exception:
                _log.exception("could not start job %s", job_id)
                self._queue.ended(user_id)

    def _start(self, job_id: str) -> None:
        job = self.store.job(job_id)
        if job is None or job.status is not JobStatus.QUEUED:  # stopped meanwhile
            if job is not None:
                self._queue.ended(job.user_id)
            return
        program = self.store.program_by_id(job.program_id)
        now = time.time()
        try:
            sandbox = self._job_sandbox()
        except ForbiddenError as exc:  # a second user appeared and nothing can keep them apart
            self._queue.ended(job.user_id)
            self._set_status(job, JobStatus.FAILED, finished_at=now, error=str(exc))
            return
        token = new_token()
        credential = credential_id = None
        if self._link is not None:
            credential, credential_id = self._link.credential(
                f"{self.gateway_id}.{job.user_id}", job.job_id,
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
        job = self._set_status(job, JobStatus.RUNNING, started_at=now,
                               token_hash=hash_token(token), credential=credential_id)
        # Registered with the runner now, so a stop() before the task first runs reaches it.
        running = self.runner.run(spec, lambda pid: self._note_pid(job.job_id, pid))
        task = asyncio.create_task(self._supervise(job, running, credential_id),
                                   name=f"qsrv-job-{job.job_id}")
        self._tasks[job.job_id] = (job.user_id, task)

    def _note_pid(self, job_id: str, pid: int) -> None:
        with contextlib.suppress(sqlite3.Error):  # a full disk: the pid is only informative
            self.store.set_job_fields(job_id, pid=pid)

    def _data_path(self, user_id: int, title: str) -> Path | None:
        try:
            return self.files.folder(user_id, title)
        except InvalidRequestError:  # a title that cannot name a folder ("..", too long)
            return None

    async def _supervise(self, job: JobRecord, running: Coroutine[Any, Any, JobOutcome],
                         credential_id: str | None) -> None:
        try:
            outcome = await running
        except Exception:
            _log.exception("supervising job %s failed", job.job_id)
            outcome = JobOutcome("failed", None, "the gateway failed to supervise the job:\n"
                                 + traceback.format_exc(), None, b"")
        try:
            if credential_id is not None and self._link is not None:
                self._link.revoke(credential_id)
            await self._record_end(job.job_id, outcome)
        finally:
            del self._tasks[job.job_id]
            self._queue.ended(job.user_id)
            self._dispatch()

    async def _record_end(self, job_id: str, outcome: JobOutcome) -> None:
        """Store how the job ended; retry a failing write (a full disk), then store it FAILED
        with the reason and without its result; keep retrying that in the background."""
        error: Exception | None = None
        for delay in (0.0, *_FINAL_WRITE_RETRIES_S):
            if delay:
                await asyncio.sleep(delay)
            try:
                self._finish(job_id, outcome)
                return
            except (sqlite3.Error, OSError) as exc:
                error = exc
                _log.warning("could not store the end of job %s: %s", job_id, exc)
        reason = (f"the gateway could not store this job's outcome ({error}); its result and "
                  "output were lost")
        fallback = JobOutcome("failed", outcome.exit_code, reason, None, b"")
        try:
            self._finish(job_id, fallback)
        except (sqlite3.Error, OSError):
            _log.error("cannot store the end of job %s; retrying every %g s", job_id,
                       _UNSAVED_RETRY_S)
            self._unsaved[job_id] = asyncio.create_task(self._store_later(job_id, fallback))

    async def _store_later(self, job_id: str, outcome: JobOutcome) -> None:
        try:
            while True:
                await asyncio.sleep(_UNSAVED_RETRY_S)
                try:
                    self._finish(job_id, outcome)
                    return
                except (sqlite3.Error, OSError):
                    continue
        finally:
            self._unsaved.pop(job_id, None)

    def _finish(self, job_id: str, outcome: JobOutcome) -> None:
        job = self.store.job(job_id)
        assert job is not None
        if job.status in TERMINAL:
            return
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
                    try:
                        self.store.set_job_fields(job_id, logs=buffer.getvalue())
                    except sqlite3.Error as exc:  # a full disk: try again next time
                        _log.warning("could not save the output of job %s: %s", job_id, exc)
                        continue
                    flushed[job_id] = buffer.generation
            for job_id in set(flushed) - live_ids:
                del flushed[job_id]


_NONE = Sandbox()


def _inspect(archive: bytes, limits: ArchiveLimits) -> tuple[dict[str, bool], str]:
    """Check an archive and hash it (blocking: the service runs it in its pool)."""
    return inspect_archive(archive, limits), hashlib.sha256(archive).hexdigest()


def _store_program(db: Path, files: UserFiles, user_id: int, title: str, entrypoint: str,
                   description: str, env: dict[str, str], archive: bytes, digest: str,
                   quota: Quota) -> ProgramVersion:
    """Write the archive (content-addressed, 0600) and its row, within the user's quota
    (blocking: through a connection of its own, in the service's pool)."""
    folder = db.parent / ARCHIVES
    path = folder / digest
    if not path.exists():
        tmp = folder / f".{digest}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(archive)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    quota = Quota(quota.max_programs, quota.max_versions, quota.max_bytes, files.usage(user_id))
    store = Store.open(db)
    try:
        return store.add_program_version(
            user_id, title, entrypoint, description, env, b"", digest, time.time(),
            archive_file=digest, archive_size=len(archive), quota=quota)
    finally:
        store.close()


def _check_env_vars(env_vars: dict[str, str]) -> dict[str, str]:
    for name, value in env_vars.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidRequestError("env_vars must map strings to strings")
        if not name or len(name) > _ENV_NAME_MAX or "=" in name or "\x00" in name + value:
            raise InvalidRequestError(f"bad environment variable name {name!r}")
    return dict(env_vars)


def _lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on the data dir for as long as the fd stays open."""
    fd = os.open(data_dir / "gateway.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"another gateway is using the data directory {data_dir}"
        ) from None
    return fd
