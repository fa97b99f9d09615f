"""The SQLite store: migrations, persistence, job listing; the job status table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from qsrv.errors import ConfigError
from qsrv.gateway import ConflictError, JobStatus, add_user, ensure_local_user, list_users
from qsrv.gateway._models import TERMINAL, TRANSITIONS
from qsrv.gateway._store import MIGRATIONS, Store
from qsrv.gateway._users import db_path, hash_token


def test_fresh_database_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db.sqlite3")
    assert store.schema_version == len(MIGRATIONS)
    store.close()


def test_a_newer_schema_is_refused_not_downgraded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer"):
        Store.open(path)


def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store.open(path)
    user = store.create_user("alice", 1.0)
    program = store.add_program_version(user.user_id, "p", "main.py", "", {"A": "1"}, b"tar",
                                        "sha", 2.0)
    store.create_job("j1", user.user_id, program.program_id, b"args", 3.0)
    store.close()
    store = Store.open(path)
    job = store.job("j1")
    assert job is not None and job.status is JobStatus.QUEUED and job.title == "p"
    assert store.job_arguments("j1") == b"args"
    assert store.program_by_id(program.program_id, with_archive=True).archive == b"tar"
    store.close()


def test_versions_and_listing(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db.sqlite3")
    alice = store.create_user("alice", 0.0)
    bob = store.create_user("bob", 0.0)
    for _ in range(3):
        store.add_program_version(alice.user_id, "p", "main.py", "", {}, b"t", "s", 1.0)
    store.add_program_version(bob.user_id, "p", "main.py", "", {}, b"t", "s", 1.0)
    assert [p.version for p in store.list_program_versions(alice.user_id, "p")] == [1, 2, 3]
    assert [(p.title, p.version) for p in store.list_programs(alice.user_id)] == [("p", 3)]
    assert [(p.title, p.version) for p in store.list_programs(bob.user_id)] == [("p", 1)]
    program = store.program_version(alice.user_id, "p", None)
    assert program is not None
    for i in range(5):
        store.create_job(f"j{i}", alice.user_id, program.program_id, b"", 10.0 + i)
    store.set_job_status("j1", JobStatus.STOPPED, 20.0)
    page, total = store.list_jobs(alice.user_id, limit=2, offset=0)
    assert total == 5 and [j.job_id for j in page] == ["j4", "j3"]
    page, total = store.list_jobs(alice.user_id, limit=2, offset=4)
    assert total == 5 and [j.job_id for j in page] == ["j0"]
    page, total = store.list_jobs(alice.user_id, limit=10, offset=0,
                                  statuses=[JobStatus.STOPPED])
    assert total == 1 and page[0].job_id == "j1"
    page, total = store.list_jobs(alice.user_id, limit=10, offset=0, created_after=12.5)
    assert total == 2
    assert store.list_jobs(bob.user_id, limit=10, offset=0)[1] == 0
    events = store.job_events("j1")
    assert [e.data["status"] for e in events] == ["QUEUED", "STOPPED"]
    store.close()


def test_status_table_rules() -> None:
    for status in JobStatus:
        assert (not TRANSITIONS[status]) == (status in TERMINAL)
    reachable = {JobStatus.QUEUED}
    frontier = [JobStatus.QUEUED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(JobStatus)
    assert JobStatus.STOPPED in TRANSITIONS[JobStatus.QUEUED]
    assert JobStatus.RUNNING not in TRANSITIONS[JobStatus.STOPPING]


def test_users_and_tokens(tmp_path: Path) -> None:
    user, token = add_user(tmp_path, "alice")
    assert token.startswith("qsrv_") and len(token) > 40
    with pytest.raises(ConflictError):
        add_user(tmp_path, "alice")
    with pytest.raises(ConfigError):
        add_user(tmp_path, " spaced")
    assert [u.name for u in list_users(tmp_path)] == ["alice"]
    store = Store.open(db_path(tmp_path))
    assert store.user_for_token(hash_token(token)) == user
    # Only the hash is stored: the token itself is nowhere in the file.
    store.close()
    assert token.encode() not in db_path(tmp_path).read_bytes()


def test_local_user_token_is_stable_and_private(tmp_path: Path) -> None:
    first = ensure_local_user(tmp_path, "me")
    assert ensure_local_user(tmp_path, "me") == first
    token_file = tmp_path / "local-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token_file.write_text("qsrv_forged\n")
    second = ensure_local_user(tmp_path, "me")
    assert second != first and second != "qsrv_forged"
    assert [u.name for u in list_users(tmp_path)] == ["me"]
