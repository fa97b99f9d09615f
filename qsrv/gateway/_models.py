"""The gateway's data model: users, program versions, jobs, job events.

These records are what every front door speaks about. The SQL layer (``_store``) returns them,
the service (``_service``) changes them, and the HTTP layers only turn them into JSON. None of
them holds pickled user data in a decoded form: arguments and results stay opaque bytes here.

Job status follows one table (``TRANSITIONS``); the service changes a job's status only through
it, so a terminal job never moves again::

    QUEUED ──> RUNNING ──> SUCCEEDED | FAILED
      │           │
      │           └──> STOPPING ──> STOPPED
      │                        └──> SUCCEEDED | FAILED  (it ended by itself before the stop
      │                                                  reached it)
      ├──> STOPPED   (a job stopped while queued never starts)
      └──> FAILED    (it could not be started: no sandbox may run it)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "JobEvent",
    "JobRecord",
    "JobStatus",
    "ProgramVersion",
    "TokenInfo",
    "User",
    "UserUsage",
    "isoformat",
]


class JobStatus(enum.StrEnum):
    """Where a job is in its life; equal to its name (``JobStatus.RUNNING == "RUNNING"``)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
)

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.STOPPED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPING}),
    JobStatus.STOPPING: frozenset({JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED}),
    JobStatus.STOPPED: frozenset(),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
}


def isoformat(timestamp: float | None) -> str | None:
    """A Unix timestamp as ISO 8601 in UTC, the form every front door shows."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class User:
    user_id: int
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """One of a user's tokens, as listed: never the token itself (only its hash is stored)."""

    token_id: int
    kind: str  # "user" (qsrv user add/token), "login" (password login), "local"
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    hash_prefix: str  # the first hex digits of its SHA-256: tells a holder which one it is

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "valid"


@dataclass(frozen=True, slots=True)
class UserUsage:
    """What a user holds, against the gateway's quotas."""

    programs: int  # distinct titles
    versions: int
    archive_bytes: int
    queued_jobs: int


@dataclass(frozen=True, slots=True)
class ProgramVersion:
    """One uploaded version of a program. ``(user_id, title, version)`` is unique.

    ``archive`` (a gzipped tar of the working directory) is loaded only when a job needs it;
    listings carry ``b""`` and ``archive_size``.
    """

    program_id: int
    user_id: int
    title: str
    version: int
    entrypoint: str
    description: str
    env_vars: dict[str, str]
    archive_size: int
    archive_sha256: str
    created_at: float
    archive: bytes = field(default=b"", repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "version": self.version,
            "entrypoint": self.entrypoint,
            "description": self.description,
            "env_var_names": sorted(self.env_vars),
            "archive_size": self.archive_size,
            "archive_sha256": self.archive_sha256,
            "created_at": isoformat(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored. ``error`` is set when FAILED (the stderr tail, i.e. the traceback)."""

    job_id: str
    user_id: int
    program_id: int
    title: str
    version: int
    status: JobStatus
    sub_status: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    error: str | None
    pid: int | None
    has_result: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "program": self.title,
            "version": self.version,
            "status": str(self.status),
            "sub_status": self.sub_status,
            "created_at": isoformat(self.created_at),
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
            "exit_code": self.exit_code,
            "error": self.error,
            "has_result": self.has_result,
        }


@dataclass(frozen=True, slots=True)
class JobEvent:
    """Something that happened to a job: for now each status change (``kind == "status"``)."""

    event_id: int
    job_id: str
    kind: str
    data: dict[str, Any]
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "data": self.data,
            "created_at": isoformat(self.created_at),
        }
