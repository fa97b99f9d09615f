"""The quantum service's SQL: sessions, batches, quantum jobs, results, programs, idempotency.

The tables (``q_*``) are made by migrations 4 and 5 of ``qsrv.gateway._schema``; this module
uses the gateway store's connection, from the same thread (the gateway's event loop). Invariants:

- Records come back as ``_models`` records; JSON columns (variables, tags, configuration,
  errors, counts) are decoded here and nowhere else.
- A program is stored once per content (``hash`` = SHA-256 of kind and text); batches and
  jobs refer to it by hash.
- Listings are newest first by ``num`` (an AUTOINCREMENT key, never reused); a listing's
  ``snapshot`` is the largest ``num`` it saw, so later pages of it ignore later inserts.
- Writes that must agree (a session's next ``seq`` and the jobs taking it; an idempotency key
  and what it created) happen in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qsrv.gateway._quantum._models import (
    BatchFilters,
    BatchRecord,
    JobFilters,
    Page,
    Pagination,
    QJobRecord,
    QResult,
    QStatus,
    SessionFilters,
    SessionRecord,
    SessionStatus,
    StopReason,
)

if TYPE_CHECKING:
    from qsrv.quantum.engines import Program

__all__ = ["NewJob", "QuantumStore", "program_hash"]

_SESSION_COLUMNS = (
    "session_id, user_id, project, platform, deduplication_id, name, status, reason, "
    "max_duration_s, max_idle_duration_s, created_at, started_at, terminated_at, last_job_at, "
    "reservation_id, internal, message")
_BATCH_COLUMNS = (
    "batch_id, user_id, project, session_id, platform, status, open, parent_id, tags, "
    "program_hash, configuration, created_at, updated_at, ended_at, timeout_s")
_JOB_COLUMNS = (
    "j.job_id, j.user_id, j.project, j.batch_id, j.session_id, j.seq, j.status, j.shots, "
    "j.variables, j.program_hash, j.created_at, j.started_at, j.ended_at, j.errors, "
    "j.parent_id, EXISTS (SELECT 1 FROM q_results r WHERE r.job_id = j.job_id), j.seed, "
    "j.platform")
_SESSION_FIELDS = frozenset({
    "status", "reason", "message", "started_at", "terminated_at", "last_job_at",
    "reservation_id"})
_BATCH_FIELDS = frozenset({
    "status", "open", "tags", "updated_at", "ended_at", "activity_at"})
_JOB_FIELDS = frozenset({"status", "started_at", "ended_at", "errors"})
_INF = 1e300  # SQLite stores infinity; JSON and some tools do not: a huge number instead


def program_hash(program: Program) -> str:
    return hashlib.sha256(f"{program.kind}\0{program.data}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to insert (the service has validated it)."""

    job_id: str
    shots: int
    variables: dict[str, Any]
    program_hash: str
    seed: int | None
    parent_id: str | None = None


class QuantumStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._programs: dict[str, Program] = {}

    @contextmanager
    def transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        self._conn.execute(f"BEGIN {mode}")
        try:
            yield self._conn
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- programs ------------------------------------------------------------------------------

    def put_program(self, program: Program, at: float) -> str:
        digest = program_hash(program)
        if digest not in self._programs:
            self._conn.execute(
                "INSERT OR IGNORE INTO q_programs (hash, kind, data, created_at) "
                "VALUES (?, ?, ?, ?)", (digest, program.kind, program.data, at))
            self._programs[digest] = program
        return digest

    def program(self, digest: str) -> Program:
        program = self._programs.get(digest)
        if program is None:
            row = self._conn.execute(
                "SELECT kind, data FROM q_programs WHERE hash = ?", (digest,)).fetchone()
            if row is None:
                raise LookupError(f"no program {digest}")
            from qsrv.quantum.engines import Program  # loads qiskit: only once programs exist

            program = self._programs[digest] = Program(str(row[0]), str(row[1]))
        return program

    # -- sessions ------------------------------------------------------------------------------

    def insert_session(self, record: SessionRecord) -> None:
        self._conn.execute(
            f"INSERT INTO q_sessions ({_SESSION_COLUMNS}) VALUES "
            f"({', '.join('?' for _ in range(17))})",
            (record.id, record.user_id, record.project, record.platform,
             record.deduplication_id, record.name, record.status.value,
             None if record.reason is None else record.reason.value,
             _finite(record.max_duration_s),
             _finite(record.max_idle_duration_s), record.created_at, record.started_at,
             record.terminated_at, record.last_job_at, record.reservation_id,
             int(record.internal), record.message))

    def session(self, session_id: str) -> SessionRecord | None:
        row = self._conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM q_sessions WHERE session_id = ?",
            (session_id,)).fetchone()
        return _session(row) if row else None

    def active_session(self, user_id: int, platform: str, deduplication_id: str,
                       project: str | None = None) -> SessionRecord | None:
        row = self._conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM q_sessions WHERE user_id = ? AND platform = ? "
            "AND IFNULL(project, '') = ? AND deduplication_id = ? "
            "AND status IN ('starting', 'running')",
            (user_id, platform, project or "", deduplication_id)).fetchone()
        return _session(row) if row else None

    def projects(self, user_id: int) -> list[str]:
        """The project labels a user's batches and sessions carry, last used first."""
        rows = self._conn.execute(
            "SELECT project FROM (SELECT project, created_at FROM q_batches WHERE user_id = ? "
            "UNION ALL SELECT project, created_at FROM q_sessions WHERE user_id = ?) "
            "WHERE project IS NOT NULL GROUP BY project ORDER BY MAX(created_at) DESC",
            (user_id, user_id))
        return [row[0] for row in rows]

    def sessions_with_status(self, *statuses: SessionStatus) -> list[SessionRecord]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM q_sessions WHERE status IN ({marks}) ORDER BY num",
            [s.value for s in statuses])
        return [_session(row) for row in rows]

    def update_session(self, session_id: str, **fields: Any) -> None:
        _check(fields, _SESSION_FIELDS)
        for key in ("status", "reason"):
            if fields.get(key) is not None:
                fields[key] = str(fields[key])
        sets = ", ".join(f"{name} = ?" for name in fields)
        self._conn.execute(f"UPDATE q_sessions SET {sets} WHERE session_id = ?",
                           [*fields.values(), session_id])

    def list_sessions(self, user_id: int, filters: SessionFilters,
                      page: Pagination) -> Page[SessionRecord]:
        where, params = _where(["user_id = ?"], [user_id], [
            ("session_id", filters.values("id")),
            ("status", _strs(filters.values("status"))),
            ("platform", filters.values("platform")),
            ("project", filters.values("project")),
        ])
        if filters.deduplication_id is not None:
            where.append("deduplication_id = ?")
            params.append(filters.deduplication_id)
        if filters.internal is not None:
            where.append("internal = ?")
            params.append(int(filters.internal))
        return self._page("q_sessions", _SESSION_COLUMNS, where, params, page, _session)

    def delete_session(self, session_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM q_results WHERE job_id IN "
                         "(SELECT job_id FROM q_jobs WHERE session_id = ?)", (session_id,))
            conn.execute("DELETE FROM q_jobs WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM q_idempotency WHERE batch_id IN "
                         "(SELECT batch_id FROM q_batches WHERE session_id = ?)", (session_id,))
            conn.execute("DELETE FROM q_batches WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM q_sessions WHERE session_id = ?", (session_id,))

    # -- batches -------------------------------------------------------------------------------

    def insert_batch(self, record: BatchRecord, digest: str, activity_at: float) -> None:
        self._conn.execute(
            f"INSERT INTO q_batches ({_BATCH_COLUMNS}, activity_at) VALUES "
            f"({', '.join('?' for _ in range(16))})",
            (record.id, record.user_id, record.project, record.session_id, record.platform,
             record.status.value, int(record.open), record.parent_id,
             json.dumps(list(record.tags)), digest, json.dumps(record.configuration),
             record.created_at, record.updated_at, record.ended_at, record.timeout_s,
             activity_at))

    def batch(self, batch_id: str, *, with_jobs: bool = True) -> BatchRecord | None:
        row = self._conn.execute(
            f"SELECT {_BATCH_COLUMNS} FROM q_batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            return None
        jobs = tuple(self.batch_jobs(batch_id)) if with_jobs else ()
        return self._batch(row, jobs)

    def batches_of_session(self, session_id: str) -> list[str]:
        rows = self._conn.execute(
            "SELECT batch_id FROM q_batches WHERE session_id = ? ORDER BY num", (session_id,))
        return [str(row[0]) for row in rows]

    def open_batches(self) -> list[tuple[str, float, float]]:
        """(batch_id, activity_at, timeout_s) of every open batch not yet ended."""
        rows = self._conn.execute(
            "SELECT batch_id, activity_at, timeout_s FROM q_batches WHERE open = 1 "
            "AND status IN ('PENDING', 'RUNNING') ORDER BY num")
        return [(str(r[0]), float(r[1]), float(r[2])) for r in rows]

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        _check(fields, _BATCH_FIELDS)
        if "status" in fields:
            fields["status"] = str(fields["status"])
        if "tags" in fields:
            fields["tags"] = json.dumps(list(fields["tags"]))
        if "open" in fields:
            fields["open"] = int(fields["open"])
        sets = ", ".join(f"{name} = ?" for name in fields)
        self._conn.execute(f"UPDATE q_batches SET {sets} WHERE batch_id = ?",
                           [*fields.values(), batch_id])

    def list_batches(self, user_id: int, filters: BatchFilters, page: Pagination, *,
                     with_jobs: bool = True) -> Page[BatchRecord]:
        where, params = _where(["user_id = ?"], [user_id], [
            ("batch_id", filters.values("id")),
            ("session_id", filters.values("session_id")),
            ("status", _strs(filters.values("status"))),
            ("platform", filters.values("platform")),
            ("project", filters.values("project")),
        ])
        _dates(where, params, filters.start_date, filters.end_date, "created_at")
        if filters.open is not None:
            where.append("open = ?")
            params.append(int(filters.open))
        if filters.parent_id is not None:
            where.append("parent_id = ?")
            params.append(filters.parent_id)
        if filters.tag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?)")
            params.append(filters.tag)
        return self._page("q_batches", _BATCH_COLUMNS, where, params, page,
                          lambda row: self._batch(
                              row, tuple(self.batch_jobs(row[0])) if with_jobs else ()))

    def idempotent(self, user_id: int, key: str) -> tuple[str, str] | None:
        """(kind, batch_id) of what ``key`` already did."""
        row = self._conn.execute(
            "SELECT kind, batch_id FROM q_idempotency WHERE user_id = ? AND key = ?",
            (user_id, key)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def remember(self, user_id: int, key: str, kind: str, batch_id: str, at: float) -> None:
        self._conn.execute(
            "INSERT INTO q_idempotency (user_id, key, kind, batch_id, created_at) "
            "VALUES (?, ?, ?, ?, ?)", (user_id, key, kind, batch_id, at))

    # -- jobs ----------------------------------------------------------------------------------

    def insert_jobs(self, session: SessionRecord, batch_id: str | None, platform: str,
                    project: str | None, jobs: Sequence[NewJob], at: float) -> None:
        """Queue ``jobs`` at the end of the session's order (call inside ``transaction``)."""
        (seq,) = self._conn.execute(
            "SELECT next_seq FROM q_sessions WHERE session_id = ?", (session.id,)).fetchone()
        self._conn.executemany(
            "INSERT INTO q_jobs (job_id, user_id, project, batch_id, session_id, seq, status, "
            "shots, variables, program_hash, seed, platform, created_at, parent_id) "
            "VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?, ?, ?, ?, ?)",
            [(job.job_id, session.user_id, project, batch_id, session.id, seq + i, job.shots,
              json.dumps(job.variables), job.program_hash, job.seed, platform, at,
              job.parent_id) for i, job in enumerate(jobs)])
        self._conn.execute(
            "UPDATE q_sessions SET next_seq = ?, last_job_at = ? WHERE session_id = ?",
            (seq + len(jobs), at, session.id))

    def job(self, job_id: str) -> QJobRecord | None:
        row = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM q_jobs j WHERE j.job_id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def batch_jobs(self, batch_id: str) -> list[QJobRecord]:
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM q_jobs j WHERE j.batch_id = ? ORDER BY j.seq",
            (batch_id,))
        return [self._job(row) for row in rows]

    def batch_counts(self, batch_id: str) -> dict[QStatus, int]:
        """How many of the batch's jobs have each status (statuses with none left out), from
        the counts the triggers of migration 5 keep: no scan of its jobs."""
        rows = self._conn.execute(
            "SELECT status, n FROM q_batch_counts WHERE batch_id = ? AND n > 0", (batch_id,))
        return {QStatus(row[0]): int(row[1]) for row in rows}

    def batch_user(self, batch_id: str) -> int | None:
        """The user owning the batch (None when there is none)."""
        row = self._conn.execute(
            "SELECT user_id FROM q_batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return None if row is None else int(row[0])

    def next_job(self, session_id: str) -> QJobRecord | None:
        """The session's first job still to run (PENDING, or RUNNING when recovering)."""
        row = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM q_jobs j WHERE j.session_id = ? "
            "AND j.status IN ('PENDING', 'RUNNING') ORDER BY j.seq LIMIT 1",
            (session_id,)).fetchone()
        return self._job(row) if row else None

    def unfinished_jobs(self, session_id: str) -> list[QJobRecord]:
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM q_jobs j WHERE j.session_id = ? "
            "AND j.status IN ('PENDING', 'RUNNING') ORDER BY j.seq", (session_id,))
        return [self._job(row) for row in rows]

    def jobs_with_status(self, *statuses: QStatus) -> list[QJobRecord]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM q_jobs j WHERE j.status IN ({marks}) ORDER BY j.num",
            [s.value for s in statuses])
        return [self._job(row) for row in rows]

    def update_job(self, job_id: str, **fields: Any) -> None:
        _check(fields, _JOB_FIELDS)
        if "status" in fields:
            fields["status"] = str(fields["status"])
        if "errors" in fields:
            fields["errors"] = json.dumps(list(fields["errors"]))
        sets = ", ".join(f"{name} = ?" for name in fields)
        self._conn.execute(f"UPDATE q_jobs SET {sets} WHERE job_id = ?",
                           [*fields.values(), job_id])

    def matching_jobs(self, user_id: int, filters: JobFilters,
                      statuses: Iterable[QStatus] = ()) -> list[QJobRecord]:
        """Every job of the user matching ``filters`` (and in ``statuses`` if given), in
        order."""
        where, params = self._job_where(user_id, filters)
        wanted = [s.value for s in statuses]
        if wanted:
            where.append(f"j.status IN ({', '.join('?' for _ in wanted)})")
            params.extend(wanted)
        rows = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM q_jobs j WHERE {' AND '.join(where)} "
            "ORDER BY j.session_id, j.seq", params)
        return [self._job(row) for row in rows]

    def list_jobs(self, user_id: int, filters: JobFilters,
                  page: Pagination) -> Page[QJobRecord]:
        where, params = self._job_where(user_id, filters)
        return self._page("q_jobs j", _JOB_COLUMNS, where, params, page, self._job,
                          num="j.num")

    def _job_where(self, user_id: int, filters: JobFilters) -> tuple[list[str], list[Any]]:
        where, params = _where(["j.user_id = ?"], [user_id], [
            ("j.job_id", filters.values("id")),
            ("j.batch_id", filters.values("batch_id")),
            ("j.session_id", filters.values("session_id")),
            ("j.status", _strs(filters.values("status"))),
            ("j.project", filters.values("project")),
            ("j.platform", filters.values("platform")),
        ])
        _dates(where, params, filters.start_date, filters.end_date, "j.created_at")
        if filters.min_shots is not None:
            where.append("j.shots >= ?")
            params.append(filters.min_shots)
        if filters.max_shots is not None:
            where.append("j.shots <= ?")
            params.append(filters.max_shots)
        if filters.errors is not None:
            where.append("j.errors != '[]'" if filters.errors else "j.errors = '[]'")
        return where, params

    def put_result(self, job_id: str, result: QResult) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO q_results (job_id, counts, native) VALUES (?, ?, ?)",
            (job_id, json.dumps(result.counts), result.native))

    def result(self, job_id: str) -> QResult | None:
        row = self._conn.execute(
            "SELECT counts, native FROM q_results WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return QResult({str(k): int(v) for k, v in json.loads(row[0]).items()},
                       None if row[1] is None else str(row[1]))

    # -- helpers -------------------------------------------------------------------------------

    def _page(self, table: str, columns: str, where: list[str], params: list[Any],
              page: Pagination, build: Any, num: str = "num") -> Page[Any]:
        clause = " AND ".join(where)
        with self.transaction("DEFERRED") as conn:  # the count and rows from one snapshot
            snapshot = page.snapshot
            if snapshot is None:
                (snapshot,) = conn.execute(f"SELECT COALESCE(MAX({num}), 0) FROM {table}"
                                           ).fetchone()
            (total,) = conn.execute(
                f"SELECT COUNT(*) FROM {table} WHERE {clause} AND {num} <= ?",
                [*params, snapshot]).fetchone()
            rows = conn.execute(
                f"SELECT {columns} FROM {table} WHERE {clause} AND {num} <= ? "
                f"ORDER BY {num} DESC LIMIT ? OFFSET ?",
                [*params, snapshot, page.limit, page.offset]).fetchall()
            results = [build(row) for row in rows]
        return Page(results, int(total), int(snapshot), page.offset, page.limit)

    def _batch(self, row: Sequence[Any], jobs: tuple[QJobRecord, ...]) -> BatchRecord:
        (batch_id, user_id, project, session_id, platform, status, is_open, parent_id, tags,
         digest, configuration, created_at, updated_at, ended_at, timeout_s) = row
        return BatchRecord(
            batch_id, user_id, project, session_id, platform, QStatus(status), bool(is_open),
            parent_id, tuple(json.loads(tags)), self.program(digest), json.loads(configuration),
            created_at, updated_at, ended_at, jobs, float(timeout_s))

    def _job(self, row: Sequence[Any]) -> QJobRecord:
        (job_id, user_id, project, batch_id, session_id, seq, status, shots, variables, digest,
         created_at, started_at, ended_at, errors, parent_id, has_result, seed, platform) = row
        return QJobRecord(
            job_id, user_id, project, batch_id, session_id, int(seq), QStatus(status),
            int(shots), json.loads(variables), self.program(digest), created_at, started_at,
            ended_at, tuple(json.loads(errors)), parent_id, bool(has_result), seed, platform)


def _session(row: Sequence[Any]) -> SessionRecord:
    (session_id, user_id, project, platform, dedup, name, status, reason, max_s, idle_s,
     created_at, started_at, terminated_at, last_job_at, reservation_id, internal,
     message) = row
    return SessionRecord(
        session_id, user_id, project, platform, dedup, name, SessionStatus(status),
        None if reason is None else StopReason(reason), _infinite(max_s), _infinite(idle_s),
        created_at, started_at, terminated_at, last_job_at, reservation_id, bool(internal),
        message)


def _finite(value: float) -> float:
    return _INF if math.isinf(value) else value


def _infinite(value: float) -> float:
    return math.inf if value >= _INF else float(value)


def _check(fields: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(fields) - allowed
    if unknown or not fields:
        raise TypeError(f"not columns that may be written: {sorted(unknown)}")


def _strs(values: tuple[Any, ...] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(str(v) for v in values)


def _where(where: list[str], params: list[Any],
           ins: list[tuple[str, tuple[Any, ...] | None]]) -> tuple[list[str], list[Any]]:
    for column, values in ins:
        if values is None:
            continue
        if not values:
            where.append("0")
            continue
        where.append(f"{column} IN ({', '.join('?' for _ in values)})")
        params.extend(values)
    return where, params


def _dates(where: list[str], params: list[Any], start: float | None, end: float | None,
           column: str) -> None:
    if start is not None:
        where.append(f"{column} >= ?")
        params.append(float(start))
    if end is not None:
        where.append(f"{column} <= ?")
        params.append(float(end))
