"""What only Scaleway's API has: models (a payload stored to be run by later jobs) and the
names, model and parameters a client gave its jobs and sessions.

Everything else (sessions, jobs, results, their states) lives in the quantum service; these
descriptions live beside it in the gateway's database (tables ``scw_*``, migration 6 of
``qsrv.gateway._schema``), so a restarted gateway still knows them and a deleted user's go with
them. Used from the gateway's event loop, on the gateway store's connection.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qsrv.errors import NotFoundError

__all__ = ["JobNote", "ModelRecord", "ScalewayStore", "SessionNote"]


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
    """The door's tables; ``connection()`` is the gateway store's (open once it has started).
    Every call is one short statement."""

    def __init__(self, connection: Callable[[], sqlite3.Connection]) -> None:
        self._connection = connection

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, args).fetchall()

    # -- models ------------------------------------------------------------------------------

    def add_model(self, user_id: int, project: str | None, payload: str) -> ModelRecord:
        record = ModelRecord(str(uuid.uuid4()), user_id, project, payload, time.time())
        self._run("INSERT INTO scw_models VALUES (?, ?, ?, ?, ?)",
                  (record.id, user_id, project, payload, record.created_at))
        return record

    def model(self, user_id: int, model_id: str) -> ModelRecord:
        rows = self._run("SELECT id, user_id, project, payload, created_at FROM scw_models "
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
        total = self._run(f"SELECT count(*) FROM scw_models WHERE {where}", tuple(args))[0][0]
        rows = self._run(f"SELECT id, user_id, project, payload, created_at FROM scw_models "
                         f"WHERE {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                         (*args, limit, offset))
        return [ModelRecord(*row) for row in rows], int(total)

    # -- notes on jobs and sessions -----------------------------------------------------------

    def note_job(self, user_id: int, job_id: str, note: JobNote) -> None:
        self._run("INSERT OR REPLACE INTO scw_jobs VALUES (?, ?, ?, ?, ?, ?)",
                  (job_id, user_id, note.name, note.model_id, note.parameters,
                   json.dumps(list(note.tags))))

    def job_note(self, job_id: str) -> JobNote | None:
        rows = self._run("SELECT name, model_id, parameters, tags FROM scw_jobs WHERE id = ?",
                         (job_id,))
        if not rows:
            return None
        name, model_id, parameters, tags = rows[0]
        return JobNote(name, model_id, parameters, tuple(json.loads(tags)))

    def note_session(self, user_id: int, session_id: str, note: SessionNote) -> None:
        self._run("INSERT OR REPLACE INTO scw_sessions VALUES (?, ?, ?, ?, ?)",
                  (session_id, user_id, note.model_id, note.parameters,
                   json.dumps(list(note.tags))))

    def session_note(self, session_id: str) -> SessionNote | None:
        rows = self._run("SELECT model_id, parameters, tags FROM scw_sessions WHERE id = ?",
                         (session_id,))
        if not rows:
            return None
        model_id, parameters, tags = rows[0]
        return SessionNote(model_id, parameters, tuple(json.loads(tags)))

    def forget_session(self, session_id: str) -> None:
        self._run("DELETE FROM scw_sessions WHERE id = ?", (session_id,))
