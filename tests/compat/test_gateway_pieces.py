"""The pieces behind the Quantum Serverless door, without processes: schema migration 2,
requirement checks, password hashing, file names, the two argument formats in the runner."""

from __future__ import annotations

import asyncio
import json
import pickle
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qsrv.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from qsrv.gateway._passwords import hash_password, verify_password
from qsrv.gateway._requirements import missing_requirements
from qsrv.gateway._store import MIGRATIONS, Store
from qsrv.gateway._upstream_files import UserFiles, check_name


def test_a_version_1_database_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.execute("INSERT INTO users VALUES (1, 'alice', 0)")
    conn.execute("INSERT INTO programs VALUES (1, 1, 't', 1, 'main.py', '', '{}', x'', 0, '', 0)")
    conn.execute("INSERT INTO jobs (job_id, user_id, program_id, status, arguments, created_at) "
                 "VALUES ('j1', 1, 1, 'SUCCEEDED', x'80', 0)")
    conn.close()
    store = Store.open(path)
    try:
        assert store.schema_version == len(MIGRATIONS)  # every migration ran, in order
        assert store.job_formats("j1") == ("pickle", None)
        job = store.create_job("j2", 1, 1, b'{"x": 1}', 1.0, "json")
        assert store.job_formats(job.job_id) == ("json", None)
        jobs, total = store.list_jobs(1, limit=10, offset=0, title="t")
        assert total == 2 and {j.job_id for j in jobs} == {"j1", "j2"}
        assert store.list_jobs(1, limit=10, offset=0, title="other") == ([], 0)
        with pytest.raises(ValueError):
            store.create_job("j3", 1, 1, b"", 1.0, "yaml")
    finally:
        store.close()


def test_requirements_are_checked_against_what_is_installed() -> None:
    assert missing_requirements(["numpy", "numpy>=1.0", "qiskit[visualization]>=1"]) == []
    assert missing_requirements(["surely-not-installed-pkg"]) == ["surely-not-installed-pkg"]
    [too_new] = missing_requirements(["numpy>=999"])
    assert too_new.startswith("numpy>=999 (installed: ")
    assert missing_requirements(["!!"]) == ["!!"]


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("hunter22hunter"), hash_password("hunter22hunter")
    assert first != second and first.startswith("scrypt$") and "hunter" not in first
    assert verify_password("hunter22hunter", first)
    assert not verify_password("hunter22hunteR", first)
    assert not verify_password("x", "not-a-hash")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "nul\x00", "x" * 256, "tab\t"])
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError):
        check_name(name)


def test_user_files_round_trip(tmp_path: Path) -> None:
    files = UserFiles(tmp_path, max_bytes=10)

    async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    assert asyncio.run(files.save(1, "fn", "a.txt", chunks(b"hello", b"!"))) == 6
    assert files.list(1, "fn") == ["a.txt"] and files.list(2, "fn") == []
    assert files.path(1, "fn", "a.txt").read_bytes() == b"hello!"
    (files.folder(1, "fn") / "link").symlink_to(tmp_path / "elsewhere")
    assert files.list(1, "fn") == ["a.txt"]
    with pytest.raises(NotFoundError):
        files.path(1, "fn", "link")
    with pytest.raises(PayloadTooLargeError):
        asyncio.run(files.save(1, "fn", "big", chunks(b"x" * 11)))
    assert files.list(1, "fn") == ["a.txt"]  # nothing half-written is left
    files.delete(1, "fn", "a.txt")
    assert files.list(1, "fn") == []


def test_json_arguments_reach_both_runtimes(tmp_path: Path) -> None:
    from qsrv.gateway._runner import JobRunner, JobSpec, RunnerConfig

    runner = JobRunner(RunnerConfig(root=tmp_path))
    runner.gateway_url = "http://127.0.0.1:9"
    text = json.dumps({"x": [1, 2], "name": "n"}).encode()
    spec = JobSpec("j", "main.py", _archive(), {}, text, "json", "tok", tmp_path / "data")
    job_dir = tmp_path / "j"
    runner._prepare(spec, job_dir, job_dir / "work", job_dir / "arguments.pkl")
    env = runner._environment(spec, job_dir / "arguments.pkl", job_dir / "result.pkl")
    assert Path(env["ARGUMENTS_PATH"]).read_bytes() == text
    assert pickle.loads(Path(env["QSRV_JOB_ARGUMENTS_PATH"]).read_bytes()) == json.loads(text)
    assert (env["ENV_JOB_GATEWAY_HOST"], env["ENV_JOB_GATEWAY_TOKEN"],
            env["ENV_JOB_ID_GATEWAY"]) == ("http://127.0.0.1:9", "tok", "j")
    assert env["DATA_PATH"] == str(tmp_path / "data")
    pickled = JobSpec("k", "main.py", _archive(), {}, pickle.dumps({"x": 1}))
    assert "ARGUMENTS_PATH" not in runner._environment(pickled, Path("a"), Path("b"))


def _archive() -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("main.py")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"pass"))
    return buffer.getvalue()
