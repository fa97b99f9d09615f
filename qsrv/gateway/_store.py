"""All of the gateway's queries, over the SQLite file ``_schema`` opens and migrates.

Invariants:

- This and ``_schema`` are the only modules that speak SQL, with ``_quantum/_store.py`` for the
  quantum service's tables (``q_*``, created by migration 4, on this module's connection). It
  stores and returns ``_models`` records and opaque bytes (archives, pickled arguments and
  results, logs); it never unpickles anything.
- One ``Store`` is used from one thread (the gateway's event loop, or a CLI command). Statements
  are short; several processes may open the same file (WAL mode, busy timeout), e.g. ``qsrv user
  add`` while the gateway runs.
- A job's status changes only through ``set_job_status``, which writes the matching ``status``
  event in the same transaction: the event log and the job row never disagree.
- A token is valid while it is neither revoked nor past its ``expires_at``; revoked and expired
  tokens stay listed (without the token itself, which is never stored) until deleted.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qsrv.gateway._errors import ConflictError, TooManyRequestsError
from qsrv.gateway._models import (
    JobEvent,
    JobRecord,
    JobStatus,
    ProgramVersion,
    TokenInfo,
    User,
    UserUsage,
)
from qsrv.gateway._schema import MIGRATIONS, open_database, private_dir, schema_version

__all__ = [
    "ARCHIVES",
    "FORMATS",
    "MIGRATIONS",
    "Quota",
    "Store",
    "load_job_inputs",
    "private_dir",
]

ARCHIVES = "archives"  # next to the database: program archives by their SHA-256

_PROGRAM_COLUMNS = (
    "program_id, user_id, title, version, entrypoint, description, env_vars, archive_size, "
    "archive_sha256, created_at"
)
_JOB_SELECT = (
    "SELECT j.job_id, j.user_id, j.program_id, p.title, p.version, j.status, j.sub_status, "
    "j.created_at, j.started_at, j.finished_at, j.exit_code, j.error, j.pid, "
    "j.result IS NOT NULL FROM jobs j JOIN programs p ON p.program_id = j.program_id"
)
# Columns set_job_status may write besides status; anything else is a programming error.
_JOB_FIELDS = frozenset(
    {"sub_status", "started_at", "finished_at", "exit_code", "error", "pid", "result", "logs",
     "result_format", "token_hash", "credential"}
)
_USER_SELECT = "SELECT user_id, name, created_at FROM users"
_TOKEN_VALID = "t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?)"


@dataclass(frozen=True, slots=True)
class Quota:
    """What one upload may not take a user past (checked in the transaction that stores it)."""

    max_programs: int
    max_versions: int
    max_bytes: int
    other_bytes: int = 0  # what the user holds besides archives (their files)


def load_job_inputs(path: Path, program_id: int, job_id: str) -> tuple[bytes, bytes]:
    """(archive, arguments) of a job, read through a connection of its own: for a thread, so
    that large blobs never cross the event loop."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        archive, archive_file = conn.execute(
            "SELECT archive, archive_file FROM programs WHERE program_id = ?", (program_id,)
        ).fetchone()
        (arguments,) = conn.execute(
            "SELECT arguments FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        conn.close()
    if archive_file:
        archive = (path.parent / ARCHIVES / archive_file).read_bytes()
    return bytes(archive), bytes(arguments)
# How a job's arguments and result are encoded (``jobs.arguments_format``/``result_format``).
FORMATS = frozenset({"pickle", "json"})


class Store:
    """The gateway's database. Open with ``Store.open(path)``; ``close()`` when done."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) the database at ``path`` and migrate it to the latest."""
        path = Path(path)
        return cls(open_database(path), path)

    def close(self) -> None:
        self._conn.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for ``_quantum._store`` (the quantum service's tables)."""
        return self._conn

    @property
    def schema_version(self) -> int:
        return schema_version(self._conn)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            if self._conn.in_transaction:  # SQLite already rolled back on a full disk
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- users and tokens ----------------------------------------------------------------------

    def create_user(self, name: str, created_at: float) -> User:
        try:
            cur = self._conn.execute(
                "INSERT INTO users (name, created_at) VALUES (?, ?)", (name, created_at)
            )
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"user {name!r} already exists") from exc
        assert cur.lastrowid is not None
        return User(cur.lastrowid, name, created_at)

    def user_by_name(self, name: str) -> User | None:
        return self._user("name = ?", name)

    def user_by_id(self, user_id: int) -> User | None:
        return self._user("user_id = ?", user_id)

    def _user(self, where: str, key: object) -> User | None:
        row = self._conn.execute(f"{_USER_SELECT} WHERE {where}", (key,)).fetchone()
        return User(*row) if row else None

    def list_users(self) -> list[User]:
        return [User(*row) for row in self._conn.execute(f"{_USER_SELECT} ORDER BY name")]

    def user_count(self) -> int:
        (count,) = self._conn.execute("SELECT COUNT(*) FROM users").fetchone()
        return int(count)

    def add_token(self, user_id: int, token_hash: str, created_at: float, *,
                  expires_at: float | None = None, kind: str = "user") -> int:
        cur = self._conn.execute(
            "INSERT INTO tokens (token_hash, user_id, created_at, expires_at, kind) "
            "VALUES (?, ?, ?, ?, ?)",
            (token_hash, user_id, created_at, expires_at, kind),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def user_for_token(self, token_hash: str, now: float | None = None) -> User | None:
        """The user of a valid (not revoked, not expired) token."""
        row = self._conn.execute(
            "SELECT u.user_id, u.name, u.created_at FROM tokens t "
            f"JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = ? AND {_TOKEN_VALID}",
            (token_hash, time.time() if now is None else now),
        ).fetchone()
        return User(*row) if row else None

    def token_state(self, token_hash: str) -> str | None:
        """Why a known token is not valid ("revoked", "expired"), None when valid or unknown."""
        row = self._conn.execute(
            "SELECT revoked_at, expires_at FROM tokens WHERE token_hash = ?", (token_hash,)
        ).fetchone()
        if row is None:
            return None
        if row[0] is not None:
            return "revoked"
        if row[1] is not None and row[1] <= time.time():
            return "expired"
        return None

    def tokens(self, user_id: int) -> list[TokenInfo]:
        rows = self._conn.execute(
            "SELECT rowid, kind, created_at, expires_at, revoked_at, substr(token_hash, 1, 8) "
            "FROM tokens WHERE user_id = ? ORDER BY rowid", (user_id,))
        return [TokenInfo(*row) for row in rows]

    def revoke_tokens(self, user_id: int, token_id: int | None, at: float) -> int:
        """Revoke one of the user's tokens (by id) or all of them; how many were valid."""
        sql = f"UPDATE tokens AS t SET revoked_at = ? WHERE user_id = ? AND {_TOKEN_VALID}"
        params: list[Any] = [at, user_id, at]
        if token_id is not None:
            sql += " AND rowid = ?"
            params.append(token_id)
        return self._conn.execute(sql, params).rowcount

    def delete_dead_tokens(self, before: float) -> int:
        """Forget tokens revoked or expired before ``before``."""
        return self._conn.execute(
            "DELETE FROM tokens WHERE revoked_at < ? OR expires_at < ?", (before, before)
        ).rowcount

    # -- settings and usage --------------------------------------------------------------------

    def setting(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        self._conn.execute(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    def usage(self, user_id: int) -> UserUsage:
        """What the user holds: programs (titles), versions, archive bytes, queued jobs."""
        programs, versions, archive_bytes = self._conn.execute(
            "SELECT COUNT(DISTINCT title), COUNT(*), COALESCE(SUM(archive_size), 0) "
            "FROM programs WHERE user_id = ?", (user_id,)).fetchone()
        (queued,) = self._conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status = ?",
            (user_id, JobStatus.QUEUED.value)).fetchone()
        return UserUsage(int(programs), int(versions), int(archive_bytes), int(queued))

    def title_versions(self, user_id: int, title: str) -> int:
        (count,) = self._conn.execute(
            "SELECT COUNT(*) FROM programs WHERE user_id = ? AND title = ?", (user_id, title)
        ).fetchone()
        return int(count)

    def credentials_ended_since(self, since: float) -> list[str]:
        """The cluster credentials of jobs that ended after ``since``."""
        rows = self._conn.execute(
            "SELECT credential FROM jobs WHERE credential IS NOT NULL AND finished_at > ?",
            (since,))
        return [str(row[0]) for row in rows]

    def set_password_hash(self, user_id: int, password_hash: str, updated_at: float) -> None:
        self._conn.execute(
            "INSERT INTO passwords (user_id, password_hash, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, "
            "updated_at = excluded.updated_at",
            (user_id, password_hash, updated_at),
        )

    def password_hash(self, name: str) -> tuple[User, str] | None:
        """The user called ``name`` and their stored password hash, None if either is missing."""
        row = self._conn.execute(
            "SELECT u.user_id, u.name, u.created_at, p.password_hash FROM users u "
            "JOIN passwords p ON p.user_id = u.user_id WHERE u.name = ?", (name,)
        ).fetchone()
        return (User(*row[:3]), str(row[3])) if row else None

    # -- programs ------------------------------------------------------------------------------

    def add_program_version(
        self, user_id: int, title: str, entrypoint: str, description: str,
        env_vars: dict[str, str], archive: bytes, archive_sha256: str, created_at: float,
        *, archive_file: str | None = None, archive_size: int | None = None,
        quota: Quota | None = None,
    ) -> ProgramVersion:
        """Store a new version of ``title``: one more than the user's latest, 1 for a new title.

        The archive is the blob ``archive``, or a file already written under ``ARCHIVES``
        (``archive_file``, of ``archive_size`` bytes). With ``quota``, refuses
        (TooManyRequestsError) a version that would take the user past it.
        """
        size = len(archive) if archive_file is None else int(archive_size or 0)
        with self._transaction() as conn:
            latest, count = conn.execute(
                "SELECT COALESCE(MAX(version), 0), COUNT(*) FROM programs "
                "WHERE user_id = ? AND title = ?", (user_id, title),
            ).fetchone()
            if quota is not None:
                _check_quota(conn, quota, user_id, title, count, size)
            cur = conn.execute(
                "INSERT INTO programs (user_id, title, version, entrypoint, description, "
                "env_vars, archive, archive_size, archive_sha256, created_at, archive_file) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user_id, title, latest + 1, entrypoint, description, json.dumps(env_vars),
                 archive if archive_file is None else b"", size, archive_sha256, created_at,
                 archive_file),
            )
        assert cur.lastrowid is not None
        return ProgramVersion(
            cur.lastrowid, user_id, title, latest + 1, entrypoint, description, dict(env_vars),
            size, archive_sha256, created_at,
        )

    def program_version(self, user_id: int, title: str,
                        version: int | None) -> ProgramVersion | None:
        """The user's ``title`` at ``version`` (the latest when None), without its archive."""
        sql = f"SELECT {_PROGRAM_COLUMNS} FROM programs WHERE user_id = ? AND title = ?"
        params: tuple[Any, ...] = (user_id, title)
        if version is None:
            sql += " ORDER BY version DESC LIMIT 1"
        else:
            sql += " AND version = ?"
            params += (version,)
        row = self._conn.execute(sql, params).fetchone()
        return _program(row) if row else None

    def program_by_id(self, program_id: int, *, with_archive: bool = False) -> ProgramVersion:
        archive = ", archive, archive_file" if with_archive else ""
        row = self._conn.execute(
            f"SELECT {_PROGRAM_COLUMNS}{archive} FROM programs WHERE program_id = ?",
            (program_id,),
        ).fetchone()
        if row is None:
            raise LookupError(f"no program with id {program_id}")
        blob = b""
        if with_archive:
            blob = row[10]
            if row[11]:
                assert self.path is not None
                blob = (self.path.parent / ARCHIVES / row[11]).read_bytes()
        return _program(row[:10], blob)

    def list_programs(self, user_id: int) -> list[ProgramVersion]:
        """The latest version of each of the user's programs, by title."""
        rows = self._conn.execute(
            f"SELECT {_PROGRAM_COLUMNS} FROM programs p WHERE user_id = ? AND version = "
            "(SELECT MAX(version) FROM programs q WHERE q.user_id = p.user_id "
            "AND q.title = p.title) ORDER BY title",
            (user_id,),
        )
        return [_program(row) for row in rows]

    def list_program_versions(self, user_id: int, title: str) -> list[ProgramVersion]:
        rows = self._conn.execute(
            f"SELECT {_PROGRAM_COLUMNS} FROM programs WHERE user_id = ? AND title = ? "
            "ORDER BY version",
            (user_id, title),
        )
        return [_program(row) for row in rows]

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(self, job_id: str, user_id: int, program_id: int, arguments: bytes,
                   created_at: float, arguments_format: str = "pickle") -> JobRecord:
        if arguments_format not in FORMATS:
            raise ValueError(f"unknown arguments format {arguments_format!r}")
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (job_id, user_id, program_id, status, arguments, created_at, "
                "arguments_format) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, user_id, program_id, JobStatus.QUEUED.value, arguments, created_at,
                 arguments_format),
            )
            _add_event(conn, job_id, "status", {"status": JobStatus.QUEUED.value}, created_at)
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: str) -> JobRecord | None:
        row = self._conn.execute(f"{_JOB_SELECT} WHERE j.job_id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def job_arguments(self, job_id: str) -> bytes:
        row = self._conn.execute("SELECT arguments FROM jobs WHERE job_id = ?", (job_id,))
        return bytes(row.fetchone()[0])

    def job_result(self, job_id: str) -> bytes | None:
        row = self._conn.execute("SELECT result FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def job_formats(self, job_id: str) -> tuple[str, str | None]:
        """``(arguments_format, result_format)``; the latter None while there is no result."""
        row = self._conn.execute(
            "SELECT arguments_format, result_format FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise LookupError(f"no job {job_id!r}")
        return str(row[0]), (None if row[1] is None else str(row[1]))

    def job_for_token(self, token_hash: str) -> JobRecord | None:
        """The job whose own token (see migration 2) hashes to ``token_hash``."""
        row = self._conn.execute(
            f"{_JOB_SELECT} WHERE j.token_hash = ?", (token_hash,)
        ).fetchone()
        return _job(row) if row else None

    def job_logs(self, job_id: str) -> bytes:
        row = self._conn.execute("SELECT logs FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return b"" if row is None else bytes(row[0])

    def list_jobs(
        self, user_id: int, *, limit: int, offset: int, statuses: Sequence[JobStatus] = (),
        created_after: float | None = None, title: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """A page of the user's jobs (of program ``title`` if given), newest first, and the
        number of all that match."""
        where = ["j.user_id = ?"]
        params: list[Any] = [user_id]
        if title is not None:
            where.append("p.title = ?")
            params.append(title)
        if statuses:
            where.append(f"j.status IN ({', '.join('?' for _ in statuses)})")
            params.extend(s.value for s in statuses)
        if created_after is not None:
            where.append("j.created_at > ?")
            params.append(created_after)
        clause = " WHERE " + " AND ".join(where)
        (total,) = self._conn.execute(
            f"SELECT COUNT(*) FROM jobs j JOIN programs p ON p.program_id = j.program_id{clause}",
            params,
        ).fetchone()
        rows = self._conn.execute(
            f"{_JOB_SELECT}{clause} ORDER BY j.created_at DESC, j.rowid DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_job(row) for row in rows], int(total)

    def jobs_with_status(self, *statuses: JobStatus) -> list[JobRecord]:
        """Every user's jobs in these statuses, oldest first (the dispatch order)."""
        marks = ", ".join("?" for _ in statuses)
        rows = self._conn.execute(
            f"{_JOB_SELECT} WHERE j.status IN ({marks}) ORDER BY j.created_at, j.rowid",
            [s.value for s in statuses],
        )
        return [_job(row) for row in rows]

    def set_job_status(self, job_id: str, status: JobStatus, at: float,
                       event: dict[str, Any] | None = None, **fields: Any) -> JobRecord:
        """Move the job to ``status``, write ``fields`` and record the status event atomically.

        The caller (the service) has checked the transition against ``TRANSITIONS``.
        """
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise TypeError(f"not job columns: {sorted(unknown)}")
        sets = ", ".join(["status = ?", *(f"{name} = ?" for name in fields)])
        with self._transaction() as conn:
            conn.execute(
                f"UPDATE jobs SET {sets} WHERE job_id = ?",
                [status.value, *fields.values(), job_id],
            )
            _add_event(conn, job_id, "status", {"status": status.value, **(event or {})}, at)
        job = self.job(job_id)
        assert job is not None
        return job

    def set_job_fields(self, job_id: str, **fields: Any) -> None:
        """Write columns that are not the status (``pid``, ``sub_status``, ``logs``)."""
        unknown = set(fields) - _JOB_FIELDS
        if unknown or not fields:
            raise TypeError(f"not job columns: {sorted(unknown)}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        self._conn.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*fields.values(), job_id])

    def add_job_event(self, job_id: str, kind: str, data: dict[str, Any], at: float) -> None:
        """Record an event that is not a status change (e.g. an error a job reported)."""
        if kind == "status":
            raise ValueError("status events are written by set_job_status only")
        _add_event(self._conn, job_id, kind, data, at)

    def job_events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        rows = self._conn.execute(
            "SELECT event_id, job_id, kind, data, created_at FROM job_events "
            "WHERE job_id = ? AND event_id > ? ORDER BY event_id",
            (job_id, after),
        )
        return [JobEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]


def _check_quota(conn: sqlite3.Connection, quota: Quota, user_id: int, title: str,
                 versions: int, size: int) -> None:
    if versions >= quota.max_versions:
        raise TooManyRequestsError(
            f"program {title!r} has {versions} versions, the most this gateway keeps per "
            f"program ({quota.max_versions})")
    if versions == 0:
        (programs,) = conn.execute(
            "SELECT COUNT(DISTINCT title) FROM programs WHERE user_id = ?", (user_id,)
        ).fetchone()
        if programs >= quota.max_programs:
            raise TooManyRequestsError(
                f"you have {programs} programs, the most this gateway keeps per user "
                f"({quota.max_programs})")
    (held,) = conn.execute(
        "SELECT COALESCE(SUM(archive_size), 0) FROM programs WHERE user_id = ?", (user_id,)
    ).fetchone()
    if held + quota.other_bytes + size > quota.max_bytes:
        raise TooManyRequestsError(
            f"this upload of {size} bytes would take what you store to "
            f"{held + quota.other_bytes + size} bytes, over your quota of {quota.max_bytes}")


def _add_event(conn: sqlite3.Connection, job_id: str, kind: str, data: dict[str, Any],
               at: float) -> None:
    conn.execute(
        "INSERT INTO job_events (job_id, kind, data, created_at) VALUES (?, ?, ?, ?)",
        (job_id, kind, json.dumps(data), at),
    )


def _program(row: Sequence[Any], archive: bytes = b"") -> ProgramVersion:
    (program_id, user_id, title, version, entrypoint, description, env_vars, size, sha,
     created_at) = row
    return ProgramVersion(
        program_id, user_id, title, version, entrypoint, description, json.loads(env_vars),
        size, sha, created_at, bytes(archive),
    )


def _job(row: Sequence[Any]) -> JobRecord:
    (job_id, user_id, program_id, title, version, status, sub_status, created_at, started_at,
     finished_at, exit_code, error, pid, has_result) = row
    return JobRecord(
        job_id, user_id, program_id, title, version, JobStatus(status), sub_status, created_at,
        started_at, finished_at, exit_code, error, pid, bool(has_result),
    )
