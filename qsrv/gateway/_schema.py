"""The gateway database's file and schema: where it is made, with which modes, and the numbered
migrations that bring it to the latest version. The queries are ``_store``'s.

Invariants:

- ``PRAGMA user_version`` is the number of migrations applied. A migration runs in one
  transaction with its version bump, so a crash leaves the schema at a whole version. A file
  from a newer qsrv (a version above ``len(MIGRATIONS)``) is refused, never downgraded.
- The database is private: its directory is made 0700 when this creates it, the file (and its
  WAL and shared-memory files, which SQLite creates with the file's mode) 0600, created so before
  SQLite first opens it; an existing file is made 0600 again when opened.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from qsrv.errors import ConfigError

__all__ = ["MIGRATIONS", "open_database", "private_dir", "schema_version"]

# Each entry moves the schema up one version. Append only; never edit a released entry.
MIGRATIONS: tuple[str, ...] = (
    # 1: users, tokens, programs with versions, jobs, job events.
    """
    CREATE TABLE users (
        user_id     INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        created_at  REAL NOT NULL
    );
    CREATE TABLE tokens (
        token_hash  TEXT PRIMARY KEY,
        user_id     INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        created_at  REAL NOT NULL
    );
    CREATE TABLE programs (
        program_id      INTEGER PRIMARY KEY,
        user_id         INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        title           TEXT NOT NULL,
        version         INTEGER NOT NULL,
        entrypoint      TEXT NOT NULL,
        description     TEXT NOT NULL,
        env_vars        TEXT NOT NULL,
        archive         BLOB NOT NULL,
        archive_size    INTEGER NOT NULL,
        archive_sha256  TEXT NOT NULL,
        created_at      REAL NOT NULL,
        UNIQUE (user_id, title, version)
    );
    CREATE TABLE jobs (
        job_id       TEXT PRIMARY KEY,
        user_id      INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        program_id   INTEGER NOT NULL REFERENCES programs(program_id),
        status       TEXT NOT NULL,
        sub_status   TEXT,
        arguments    BLOB NOT NULL,
        created_at   REAL NOT NULL,
        started_at   REAL,
        finished_at  REAL,
        exit_code    INTEGER,
        error        TEXT,
        pid          INTEGER,
        result       BLOB,
        logs         BLOB NOT NULL DEFAULT x''
    );
    CREATE INDEX jobs_by_user ON jobs (user_id, created_at);
    CREATE INDEX jobs_by_status ON jobs (status, created_at);
    CREATE TABLE job_events (
        event_id    INTEGER PRIMARY KEY,
        job_id      TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
        kind        TEXT NOT NULL,
        data        TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE INDEX job_events_by_job ON job_events (job_id, event_id);
    """,
    # 2: the upstream-compatible door (``_upstream_http``). Arguments and results are either a
    # pickle (qsrv's own client) or JSON text (the Quantum Serverless client); a running job
    # holds a token of its own (its hash) for calling back; users may log in with a password.
    """
    ALTER TABLE jobs ADD COLUMN arguments_format TEXT NOT NULL DEFAULT 'pickle';
    ALTER TABLE jobs ADD COLUMN result_format TEXT;
    ALTER TABLE jobs ADD COLUMN token_hash TEXT;
    CREATE UNIQUE INDEX jobs_by_token ON jobs (token_hash) WHERE token_hash IS NOT NULL;
    CREATE TABLE passwords (
        user_id        INTEGER PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
        password_hash  TEXT NOT NULL,
        updated_at     REAL NOT NULL
    );
    """,
    # 3: tokens that expire and can be revoked (listed by id, never shown again), what kind of
    # token each is; the gateway's settings (its quotas, shown by ``qsrv user list``; its id);
    # the cluster credential a job held (revoked again when a restarted scheduler forgot it);
    # archives kept as files (``archives/<sha256>``, written off the event loop), not blobs.
    """
    ALTER TABLE tokens ADD COLUMN expires_at REAL;
    ALTER TABLE tokens ADD COLUMN revoked_at REAL;
    ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';
    CREATE INDEX tokens_by_user ON tokens (user_id);
    CREATE TABLE settings (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    ALTER TABLE jobs ADD COLUMN credential TEXT;
    CREATE INDEX programs_by_user ON programs (user_id, title, version);
    CREATE INDEX jobs_by_finish ON jobs (finished_at) WHERE credential IS NOT NULL;
    ALTER TABLE programs ADD COLUMN archive_file TEXT;
    """,
    # 4: the quantum service (``_quantum``): programs by hash, sessions, batches, quantum jobs,
    # their results, idempotency keys. ``num`` orders listings (newest first) and pins a
    # listing's snapshot; a session's active deduplication id is unique.
    """
    CREATE TABLE q_programs (
        hash        TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        data        TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE q_sessions (
        num                  INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id           TEXT NOT NULL UNIQUE,
        user_id              INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        project              TEXT,
        platform             TEXT NOT NULL,
        deduplication_id     TEXT,
        name                 TEXT NOT NULL,
        status               TEXT NOT NULL,
        reason               TEXT,
        message              TEXT,
        max_duration_s       REAL NOT NULL,
        max_idle_duration_s  REAL NOT NULL,
        created_at           REAL NOT NULL,
        started_at           REAL,
        terminated_at        REAL,
        last_job_at          REAL NOT NULL,
        reservation_id       TEXT,
        internal             INTEGER NOT NULL DEFAULT 0,
        next_seq             INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX q_sessions_dedup ON q_sessions (user_id, platform, deduplication_id)
        WHERE deduplication_id IS NOT NULL AND status IN ('starting', 'running');
    CREATE INDEX q_sessions_by_user ON q_sessions (user_id, num);
    CREATE INDEX q_sessions_by_status ON q_sessions (status);
    CREATE TABLE q_batches (
        num           INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id      TEXT NOT NULL UNIQUE,
        user_id       INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        project       TEXT,
        session_id    TEXT NOT NULL,
        platform      TEXT NOT NULL,
        status        TEXT NOT NULL,
        open          INTEGER NOT NULL,
        parent_id     TEXT,
        tags          TEXT NOT NULL,
        program_hash  TEXT NOT NULL REFERENCES q_programs(hash),
        configuration TEXT NOT NULL,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        ended_at      REAL,
        activity_at   REAL NOT NULL,
        timeout_s     REAL NOT NULL
    );
    CREATE INDEX q_batches_by_user ON q_batches (user_id, num);
    CREATE INDEX q_batches_by_session ON q_batches (session_id);
    CREATE INDEX q_batches_by_status ON q_batches (status);
    CREATE TABLE q_jobs (
        num           INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id        TEXT NOT NULL UNIQUE,
        user_id       INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        project       TEXT,
        batch_id      TEXT,
        session_id    TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        status        TEXT NOT NULL,
        shots         INTEGER NOT NULL,
        variables     TEXT NOT NULL,
        program_hash  TEXT NOT NULL REFERENCES q_programs(hash),
        seed          INTEGER,
        platform      TEXT NOT NULL,
        created_at    REAL NOT NULL,
        started_at    REAL,
        ended_at      REAL,
        errors        TEXT NOT NULL DEFAULT '[]',
        parent_id     TEXT
    );
    CREATE INDEX q_jobs_by_user ON q_jobs (user_id, num);
    CREATE INDEX q_jobs_by_session ON q_jobs (session_id, status, seq);
    CREATE INDEX q_jobs_by_batch ON q_jobs (batch_id, seq);
    CREATE TABLE q_results (
        job_id  TEXT PRIMARY KEY REFERENCES q_jobs(job_id) ON DELETE CASCADE,
        counts  TEXT NOT NULL,
        native  TEXT
    );
    CREATE TABLE q_idempotency (
        user_id     INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        key         TEXT NOT NULL,
        kind        TEXT NOT NULL,
        batch_id    TEXT NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (user_id, key)
    );
    """,
    # 5: per-status job counts of each batch, kept by triggers on ``q_jobs`` inside the
    # statement that changes a job (insert, status update, delete), so they never disagree
    # with the jobs whichever code path changed them; filled from the jobs already stored. A
    # batch's status and the doors' polls read them instead of its jobs.
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
    # 6: what only the Scaleway door's API has (``_scaleway``): models (a payload kept for
    # later jobs) and the name, model, parameters and tags a client gave its jobs and sessions.
    """
    CREATE TABLE scw_models (
        id          TEXT PRIMARY KEY,
        user_id     INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        project     TEXT,
        payload     TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE INDEX scw_models_by_user ON scw_models (user_id, project, created_at);
    CREATE TABLE scw_jobs (
        id          TEXT PRIMARY KEY,
        user_id     INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        model_id    TEXT,
        parameters  TEXT,
        tags        TEXT NOT NULL
    );
    CREATE TABLE scw_sessions (
        id          TEXT PRIMARY KEY,
        user_id     INTEGER NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
        model_id    TEXT,
        parameters  TEXT,
        tags        TEXT NOT NULL
    );
    """,
    # 7: a deduplication id is one per project: the same id under two project labels (a
    # vendor door's projects) names two sessions. Native sessions carry no project.
    """
    DROP INDEX q_sessions_dedup;
    CREATE UNIQUE INDEX q_sessions_dedup
        ON q_sessions (user_id, platform, IFNULL(project, ''), deduplication_id)
        WHERE deduplication_id IS NOT NULL AND status IN ('starting', 'running');
    """,
)


def open_database(path: Path) -> sqlite3.Connection:
    """A connection to the database at ``path`` (created private if missing), migrated to the
    latest version; ConfigError when it cannot be opened or is from a newer qsrv."""
    try:
        private_dir(path.parent)
        _private_file(path)
        conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot open gateway database {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _migrate(conn: sqlite3.Connection) -> None:
    current = schema_version(conn)
    if current > len(MIGRATIONS):
        raise ConfigError(
            f"the gateway database has schema version {current}, newer than this qsrv "
            f"understands ({len(MIGRATIONS)}); upgrade qsrv"
        )
    for number in range(current + 1, len(MIGRATIONS) + 1):
        script = MIGRATIONS[number - 1]
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
        )


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """Make ``path`` (and missing parents) a directory; one this creates gets ``mode`` whatever
    the umask. An existing one keeps its mode (the service sets its data directory's)."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
        else:
            os.chmod(path, mode)
    return path


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing; make an existing one 0600 (with the
    WAL and shared-memory files SQLite keeps next to it)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    for each in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            st = os.lstat(each)
        except FileNotFoundError:
            continue
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(each, 0o600)
