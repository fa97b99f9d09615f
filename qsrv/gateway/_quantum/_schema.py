"""The quantum service's schema steps after the gateway store's migration 4 made its tables.

Numbered as the gateway store's migrations are (append only; never edit a released entry):
the number applied is the one row of ``q_schema``, each step runs in one transaction with its
bump, and a database from a newer qsrv is refused, never downgraded. ``upgrade`` runs when the
quantum service starts on a store.

1. ``q_batch_counts``: how many jobs of each batch have each status, kept by triggers on
   ``q_jobs`` inside the statement that changes a job (insert, status update, delete), so the
   counts never disagree with the jobs, whichever code path changed them; filled from the jobs
   already stored. A batch's status and the doors' polls read them instead of its jobs.
"""

from __future__ import annotations

import sqlite3

from qsrv.errors import ConfigError

__all__ = ["STEPS", "upgrade"]

STEPS: tuple[str, ...] = (
    # 1: per-status job counts of each batch.
    """
    CREATE TABLE q_batch_counts (
        batch_id  TEXT NOT NULL,
        status    TEXT NOT NULL,
        n         INTEGER NOT NULL,
        PRIMARY KEY (batch_id, status)
    ) WITHOUT ROWID;
    INSERT INTO q_batch_counts (batch_id, status, n)
        SELECT batch_id, status, COUNT(*) FROM q_jobs WHERE batch_id IS NOT NULL
        GROUP BY batch_id, status;
    CREATE TRIGGER q_batch_counts_insert AFTER INSERT ON q_jobs
        WHEN NEW.batch_id IS NOT NULL
    BEGIN
        INSERT INTO q_batch_counts (batch_id, status, n) VALUES (NEW.batch_id, NEW.status, 1)
            ON CONFLICT (batch_id, status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER q_batch_counts_update AFTER UPDATE OF status ON q_jobs
        WHEN NEW.batch_id IS NOT NULL AND OLD.status IS NOT NEW.status
    BEGIN
        UPDATE q_batch_counts SET n = n - 1
            WHERE batch_id = OLD.batch_id AND status = OLD.status;
        INSERT INTO q_batch_counts (batch_id, status, n) VALUES (NEW.batch_id, NEW.status, 1)
            ON CONFLICT (batch_id, status) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER q_batch_counts_delete AFTER DELETE ON q_jobs
        WHEN OLD.batch_id IS NOT NULL
    BEGIN
        UPDATE q_batch_counts SET n = n - 1
            WHERE batch_id = OLD.batch_id AND status = OLD.status;
    END;
    CREATE TRIGGER q_batch_counts_gone AFTER DELETE ON q_batches
    BEGIN
        DELETE FROM q_batch_counts WHERE batch_id = OLD.batch_id;
    END;
    """,
)


def version(conn: sqlite3.Connection) -> int:
    """The number of steps applied (0 before the first)."""
    conn.execute("CREATE TABLE IF NOT EXISTS q_schema (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM q_schema").fetchone()
    return int(row[0] or 0)


def upgrade(conn: sqlite3.Connection) -> None:
    """Apply the steps this database lacks (on the gateway store's connection, in autocommit
    mode, with the quantum tables of migration 4 in place)."""
    current = version(conn)
    if current > len(STEPS):
        raise ConfigError(
            f"the gateway database's quantum tables have schema version {current}, newer "
            f"than this qsrv understands ({len(STEPS)}); upgrade qsrv")
    for number in range(current + 1, len(STEPS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if version(conn) >= number:  # another process applied it meanwhile
                conn.execute("COMMIT")
                continue
            for statement in _statements(STEPS[number - 1]):
                conn.execute(statement)
            conn.execute("DELETE FROM q_schema")
            conn.execute("INSERT INTO q_schema (version) VALUES (?)", (number,))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """The complete statements of ``script`` (a trigger's body stays whole)."""
    found: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"an incomplete statement in a schema step: {pending.strip()[:60]}")
    return found
