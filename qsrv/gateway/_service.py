"""The gateway's one service layer: every front door (HTTP routes) calls these methods.

``GatewayService`` owns the store, users and their programs, and asks ``JobLifecycle``
(``_jobs``) to run, stop and wait for their jobs. Invariants:

- Every method that takes a ``user`` only ever sees that user's programs and jobs: another
  user's job is reported as missing (NotFoundError), so its existence does not leak either.
- A job's status changes only in the lifecycle (``_jobs``: its invariants say how a job starts,
  ends, is stopped and is recovered after a restart). A status the service reports is the one
  stored.
- A user has at most ``max_queued_jobs_per_user`` queued jobs, ``max_programs_per_user``
  programs, ``max_versions_per_program`` versions of one, and stores at most
  ``max_stored_bytes_per_user`` (archives and files); past a quota: TooManyRequestsError (429).
  A submission costs O(log n) whatever the queue's length.
- Jobs run in a sandbox (``_sandbox_choice``); jobs are refused, with how to choose, when
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
import fcntl
import functools
import hashlib
import json
import logging
import os
import pickle
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from qsrv.errors import ConfigError
from qsrv.gateway._archive import ArchiveLimits, check_entrypoint, inspect_archive
from qsrv.gateway._cluster import ClusterLink
from qsrv.gateway._config import GatewayConfig
from qsrv.gateway._errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnauthorizedError,
)
from qsrv.gateway._jobs import FINAL_WRITE_RETRIES_S, RESTART_ERROR, JobLifecycle
from qsrv.gateway._models import TERMINAL, JobEvent, JobRecord, JobStatus, ProgramVersion, User
from qsrv.gateway._passwords import MAX_LENGTH, dummy_hash, verify_password
from qsrv.gateway._programs import check_env_vars, check_title, store_program
from qsrv.gateway._quantum import QuantumConfig, QuantumService
from qsrv.gateway._sandbox import Sandbox
from qsrv.gateway._sandbox_choice import SandboxChoice
from qsrv.gateway._store import ARCHIVES, FORMATS, Quota, Store, private_dir
from qsrv.gateway._throttle import LoginThrottle, ThrottleRules
from qsrv.gateway._upstream_files import UserFiles
from qsrv.gateway._users import db_path, hash_token, issue_token

__all__ = ["RESTART_ERROR", "GatewayConfig", "GatewayService"]

_log = logging.getLogger("qsrv.gateway")
_T = TypeVar("_T")
# Waits before retrying a job's final write; read when a service is made (tests shorten it).
_FINAL_WRITE_RETRIES_S = FINAL_WRITE_RETRIES_S


class GatewayService:
    """Users, programs and jobs. ``await start()`` before use, ``await close()`` after."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._sandboxes = SandboxChoice(config)
        self._store: Store | None = None
        self._lock_fd: int | None = None
        self._throttle = LoginThrottle(
            ThrottleRules(config.login_failures_per_user, max_s=config.login_backoff_max_s),
            ThrottleRules(config.login_failures_per_address, max_s=config.login_backoff_max_s))
        self._pool = ThreadPoolExecutor(max(1, config.archive_workers),
                                        thread_name_prefix="qsrv-archive")
        self._link: ClusterLink | None = None
        self.gateway_id = ""
        if config.cluster_address and config.cluster_token:
            self._link = ClusterLink(config.cluster_address, config.cluster_token,
                                     self._recent_credentials)
        self.files = UserFiles(config.data_dir / "files", config.archive_limits.max_archive_bytes)
        self.lifecycle = JobLifecycle(config, self.files, self._job_sandbox, self._link,
                                      final_write_retries_s=_FINAL_WRITE_RETRIES_S)
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
        return self.lifecycle.runner.gateway_url

    @gateway_url.setter
    def gateway_url(self, url: str) -> None:
        self.lifecycle.runner.gateway_url = url

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
            await self._sandboxes.check(self.store.user_count())
            self._secure_layout()
            self._settings()
            self.lifecycle.recover(self.store, self.gateway_id)
            await self.quantum.start(self.store)
        except BaseException:
            if self._store is not None:
                self._store.close()
                self._store = None
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        if self._link is not None:
            self._link.start()
        self.lifecycle.start()

    async def close(self) -> None:
        """Stop running jobs (they end FAILED: the gateway stopped), keep queued ones queued."""
        await self.lifecycle.close()
        await self.quantum.close()
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

    def _job_sandbox(self) -> Sandbox:
        """The sandbox a job starting now runs in; ForbiddenError when none may be used."""
        return self._sandboxes.for_job(self.store.user_count())

    def _secure_layout(self) -> None:
        """Modes of the data directory and the folders jobs reach (see the module's doc)."""
        data_dir = self.config.data_dir
        mode = self._sandboxes.data_dir_mode
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
        the address ``address`` is backed off after failures, or has as many attempts in
        flight as it has failures left."""
        self._throttle.begin(name, address)
        try:
            found = self.store.password_hash(name) \
                if name and len(password) <= MAX_LENGTH else None
            stored = found[1] if found is not None else dummy_hash()
            valid = await asyncio.to_thread(verify_password, password, stored)
        finally:
            self._throttle.end(name, address)
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
        check_title(title)
        env = check_env_vars(env_vars or {})
        members, digest = await self._off_loop(_inspect, archive, self.config.archive_limits)
        entry = check_entrypoint(entrypoint, members)
        config = self.config
        quota = Quota(config.max_programs_per_user, config.max_versions_per_program,
                      config.max_stored_bytes_per_user)
        return await self._off_loop(
            store_program, db_path(config.data_dir), self.files, user.user_id, title, entry,
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
        queued = self.lifecycle.queued(user.user_id)
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
        self.lifecycle.submit(job)
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
        live = self.lifecycle.live_logs(job_id)
        return live.getvalue() if live is not None else self.store.job_logs(job_id)

    def result(self, user: User, job_id: str) -> bytes | None:
        """The pickled result of a SUCCEEDED job, None when it saved none."""
        result = self._saved_result(user, job_id)
        if result is not None and self.store.job_formats(job_id)[1] == "json":
            try:
                return pickle.dumps(json.loads(result), protocol=5)
            except (ValueError, RecursionError):
                raise ConflictError(f"job {job_id} saved a result that is not JSON") from None
        return result

    def result_json(self, user: User, job_id: str) -> str | None:
        """The JSON text of a SUCCEEDED job's result, None when it saved none. A result saved
        as a pickle (qsrv's ``save_result``) is a ConflictError: it is never unpickled here."""
        result = self._saved_result(user, job_id)
        if result is None:
            return None
        if self.store.job_formats(job_id)[1] != "json":
            raise ConflictError(
                f"job {job_id} saved its result with qsrv's save_result (a pickle), which only "
                "qsrv's client reads; save it as JSON (qiskit_serverless.save_result) to read it "
                "here"
            )
        return result.decode("utf-8", "replace")

    def _saved_result(self, user: User, job_id: str) -> bytes | None:
        job = self.job(user, job_id)
        if job.status is not JobStatus.SUCCEEDED:
            raise ConflictError(f"job {job_id} is {job.status}, it has no result")
        return self.store.job_result(job_id)

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
        await self.lifecycle.until_terminal(job_id, timeout)
        return self.job(user, job_id)

    async def stop(self, user: User, job_id: str, timeout: float | None = None) -> JobRecord:
        """Stop the job and wait (up to ``timeout``) until it is terminal.

        A queued job becomes STOPPED at once and never starts. A running one becomes STOPPING,
        its process group is terminated, and it becomes STOPPED once the tree is gone. Stopping
        a terminal job changes nothing.
        """
        job = self.lifecycle.stop(self.job(user, job_id))
        if job.status in TERMINAL:
            return job
        return await self.wait(user, job_id, timeout)


def _inspect(archive: bytes, limits: ArchiveLimits) -> tuple[dict[str, bool], str]:
    """Check an archive and hash it (blocking: the service runs it in its pool)."""
    return inspect_archive(archive, limits), hashlib.sha256(archive).hexdigest()


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
