"""What only Scaleway's API has: models (a payload stored to be run by later jobs) and the
names, model and parameters a client gave its jobs and sessions.

Everything else (sessions, jobs, results, their states) lives in the quantum service; this
file (``scaleway.sqlite3`` in the gateway's data directory) keeps only these descriptions, so
a restarted gateway still knows them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qsrv.errors import NotFoundError

__all__ = ["JobNote", "ModelRecord", "ScalewayStore", "SessionNote"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, project TEXT, payload TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS models_by_user ON models (user_id, project, created_at);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL, model_id TEXT,
    parameters TEXT, tags TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, model_id TEXT, parameters TEXT,
    tags TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    id: str
    user_id: int
    project: str | None
    payload: str
    created_at: float


@dataclass(frozen=True, slots=True)
class JobNote:
    name: str
    model_id: str | None
    parameters: str | None
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionNote:
    model_id: str | None
    parameters: str | None
    tags: tuple[str, ...]


class ScalewayStore:
    """The door's own SQLite file, opened at first use; every call is one short statement."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- models ------------------------------------------------------------------------------

    def add_model(self, user_id: int, project: str | None, payload: str) -> ModelRecord:
        record = ModelRecord(str(uuid.uuid4()), user_id, project, payload, time.time())
        self._run("INSERT INTO models VALUES (?, ?, ?, ?, ?)",
                  (record.id, user_id, project, payload, record.created_at))
        return record

    def model(self, user_id: int, model_id: str) -> ModelRecord:
        rows = self._run("SELECT id, user_id, project, payload, created_at FROM models "
                         "WHERE id = ? AND user_id = ?", (model_id, user_id))
        if not rows:
            raise NotFoundError(f"no model {model_id}")
        return ModelRecord(*rows[0])

    def models(self, user_id: int, project: str | None, offset: int,
               limit: int) -> tuple[list[ModelRecord], int]:
        where = "user_id = ?"
        args: list[Any] = [user_id]
        if project:
            where += " AND project = ?"
            args.append(project)
        total = self._run(f"SELECT count(*) FROM models WHERE {where}", tuple(args))[0][0]
        rows = self._run(f"SELECT id, user_id, project, payload, created_at FROM models "
                         f"WHERE {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                         (*args, limit, offset))
        return [ModelRecord(*row) for row in rows], int(total)

    # -- notes on jobs and sessions -----------------------------------------------------------

    def note_job(self, user_id: int, job_id: str, note: JobNote) -> None:
        self._run("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
                  (job_id, user_id, note.name, note.model_id, note.parameters,
                   json.dumps(list(note.tags))))

    def job_note(self, job_id: str) -> JobNote | None:
        rows = self._run("SELECT name, model_id, parameters, tags FROM jobs WHERE id = ?",
                         (job_id,))
        if not rows:
            return None
        name, model_id, parameters, tags = rows[0]
        return JobNote(name, model_id, parameters, tuple(json.loads(tags)))

    def note_session(self, user_id: int, session_id: str, note: SessionNote) -> None:
        self._run("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)",
                  (session_id, user_id, note.model_id, note.parameters,
                   json.dumps(list(note.tags))))

    def session_note(self, session_id: str) -> SessionNote | None:
        rows = self._run("SELECT model_id, parameters, tags FROM sessions WHERE id = ?",
                         (session_id,))
        if not rows:
            return None
        model_id, parameters, tags = rows[0]
        return SessionNote(model_id, parameters, tuple(json.loads(tags)))

    def forget_session(self, session_id: str) -> None:
        self._run("DELETE FROM sessions WHERE id = ?", (session_id,))
