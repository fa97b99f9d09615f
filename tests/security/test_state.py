"""Private state, tokens that end, and jobs that always end: file modes on a shared host, token
expiry and revocation, a full disk when a job ends, sandboxes left by a crash."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import qsrv.gateway._service as service_module
from qsrv.gateway import (
    Client,
    JobStatus,
    Program,
    UnauthorizedError,
    add_user,
    ensure_local_user,
    list_tokens,
    revoke_tokens,
    set_password,
)
from tests._support import GATE_CLIENT, Gate, wait_for
from tests._support.gateway import ThreadedGateway


def program(root: Path, title: str, source: str) -> Program:
    folder = root / f"prog-{title}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(textwrap.dedent(source))
    (folder / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(folder / "run.sh", 0o755)
    return Program(title, "main.py", folder)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """What a careless shared host does: files created world-writable unless set otherwise."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_everything_the_gateway_keeps_is_private(
        open_umask: None, make_gateway: Callable[..., ThreadedGateway], data_dir: Path,
        tmp_path: Path) -> None:
    token = add_user(data_dir, "alice")[1]
    ensure_local_user(data_dir, "alice")
    gateway = make_gateway(keep_sandboxes=True)
    alice = Client(gateway.url, token)
    job = alice.run(program(tmp_path, "p", """
        import os
        from qsrv.gateway import save_result
        open(os.path.join(os.environ["DATA_PATH"], "out.txt"), "w").write("x")
        save_result("done")
    """))
    assert job.result(timeout=60) == "done"
    assert mode(data_dir) == 0o700
    for name in ("gateway.sqlite3", "gateway.sqlite3-wal", "gateway.sqlite3-shm",
                 "gateway.lock", "local-token"):
        assert mode(data_dir / name) == 0o600, name
    for folder in ("jobs", "files", "archives"):
        assert mode(data_dir / folder) == 0o700, folder
    archives = list((data_dir / "archives").iterdir())
    assert archives and all(mode(a) == 0o600 for a in archives)
    job_dir = data_dir / "jobs" / job.job_id
    assert mode(job_dir) == 0o700 and mode(job_dir / "work") == 0o700
    assert mode(job_dir / "work" / "main.py") == 0o600
    assert mode(job_dir / "work" / "run.sh") == 0o700  # executable stays so, for its owner
    assert mode(job_dir / "arguments.pkl") == 0o600
    user_files = data_dir / "files" / "1"
    assert mode(user_files) == 0o700 and mode(user_files / "p") == 0o700


def test_a_data_directory_made_by_qsrv_user_add_is_private(open_umask: None,
                                                           tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    done = subprocess.run([sys.executable, "-m", "qsrv", "user", "add", "zoe", "--data-dir",
                           str(data)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert mode(data) == 0o700 and mode(data / "gateway.sqlite3") == 0o600


def test_an_existing_database_is_made_private_again(tmp_path: Path) -> None:
    data = tmp_path / "old"
    data.mkdir(mode=0o755)
    add_user(data, "zoe")
    os.chmod(data / "gateway.sqlite3", 0o644)
    add_user(data, "yan")
    assert mode(data / "gateway.sqlite3") == 0o600


def test_tokens_expire_and_can_be_revoked(make_gateway: Callable[..., ThreadedGateway],
                                          data_dir: Path) -> None:
    _, short = add_user(data_dir, "alice", expires_in=1.0)
    _, lasting = add_user(data_dir, "bob")
    gateway = make_gateway()

    def refusal(token: str) -> str:
        try:
            Client(gateway.url, token).jobs()
        except UnauthorizedError as exc:
            return str(exc)
        return ""

    assert refusal(short) == ""
    assert wait_for(lambda: refusal(short), what="the token to expire") == "this token expired"
    tokens = list_tokens(data_dir, "bob")
    assert [t.kind for t in tokens] == ["user"] and lasting not in repr(tokens)
    assert revoke_tokens(data_dir, "bob", tokens[0].token_id) == 1
    assert refusal(lasting) == "this token revoked"  # at once, on the running gateway
    assert revoke_tokens(data_dir, "bob") == 0  # nothing valid is left


def test_login_tokens_expire_by_default(make_gateway: Callable[..., ThreadedGateway],
                                        data_dir: Path) -> None:
    add_user(data_dir, "alice")
    set_password(data_dir, "alice", "correct horse battery")
    gateway = make_gateway(login_token_ttl_s=3600.0)
    token = gateway.call(gateway.server.service.login("alice", "correct horse battery"))
    login = [t for t in list_tokens(data_dir, "alice") if t.kind == "login"]
    assert len(login) == 1 and login[0].expires_at is not None
    assert 3000 < login[0].expires_at - time.time() <= 3600
    assert Client(gateway.url, token).jobs().total == 0


def test_the_cli_lists_and_revokes_without_showing_tokens(data_dir: Path) -> None:
    token = add_user(data_dir, "alice", expires_in=86400.0)[1]
    run = [sys.executable, "-m", "qsrv", "user"]
    listed = subprocess.run([*run, "tokens", "alice", "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and token not in listed.stdout and "valid" in listed.stdout
    revoked = subprocess.run([*run, "revoke", "alice", "--data-dir", str(data_dir)],
                             capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0 and "1 valid token" in revoked.stdout
    added = subprocess.run([*run, "add", "bob", "--expires", "30d", "--data-dir",
                            str(data_dir)], capture_output=True, text=True, timeout=60)
    assert added.returncode == 0
    [bob] = list_tokens(data_dir, "bob")
    assert bob.expires_at is not None and 29 * 86400 < bob.expires_at - time.time() <= 30 * 86400


# -- a full disk when a job ends ----------------------------------------------------------------


@contextlib.contextmanager
def small_disk(root: Path, size: str = "8m") -> Iterator[Path | None]:
    """A tmpfs of ``size`` at ``root`` (None where mounting is not allowed)."""
    root.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(root)],
        capture_output=True).returncode == 0
    try:
        yield root if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root)], capture_output=True)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` until ``leave`` bytes are left."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as out, contextlib.suppress(OSError):
        out.write(bytes(max(0, free - leave)))


def _full_disk_failure(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make the disk 'full' for a job's final write: a real tmpfs filled up where it can be
    mounted, else a store whose writes of a result fail as SQLite does on a full disk."""
    if data_dir.parent.name == "tmpfs-mounted":
        return lambda: _fill(data_dir, 256 << 10)
    from qsrv.gateway._store import Store

    original = Store.set_job_status

    def failing(self: Any, job_id: str, status: JobStatus, at: float,
                event: Any = None, **fields: Any) -> Any:
        if fields.get("result") is not None or fields.get("logs"):
            raise sqlite3.OperationalError("database or disk is full")
        return original(self, job_id, status, at, event, **fields)

    return lambda: monkeypatch.setattr(Store, "set_job_status", failing)


def test_a_full_disk_when_a_job_ends_fails_it_with_the_reason(
        make_gateway_at: Callable[..., tuple[ThreadedGateway, str, Path]],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "_FINAL_WRITE_RETRIES_S", (0.05, 0.1))
    with small_disk(tmp_path / "tmpfs-mounted") as disk:
        # (the job's directory is kept: its removal must not free the room the write needs)
        gateway, token, data_dir = make_gateway_at(disk or tmp_path / "plain",
                                                   keep_sandboxes=True)
        fill = _full_disk_failure(data_dir, monkeypatch)
        alice = Client(gateway.url, token)
        with Gate(timeout=60) as gate:
            job = alice.run(program(tmp_path, "big", GATE_CLIENT + f"""
from qsrv.gateway import save_result
save_result(b"r" * (3 << 20))
print("x" * 100000)
gate({gate.port})
"""))
            conn = gate.accept()
            fill()
            conn.sendall(b"x")
            assert job.wait(timeout=60) is JobStatus.FAILED
        info = alice.job(job.job_id).info
        assert "could not store this job's outcome" in info["error"], info
        assert "full" in info["error"]
        # nothing is left RUNNING, and the gateway keeps working
        assert alice.jobs(status="RUNNING").total == 0


def test_a_stop_during_a_full_disk_still_ends_the_job(
        make_gateway_at: Callable[..., tuple[ThreadedGateway, str, Path]],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "_FINAL_WRITE_RETRIES_S", (0.05,))
    gateway, token, data_dir = make_gateway_at(tmp_path / "plain")
    alice = Client(gateway.url, token)
    with Gate(timeout=60) as gate:
        job = alice.run(program(tmp_path, "slow", GATE_CLIENT + f"""
print("y" * 1000)
gate({gate.port})
"""))
        gate.accept()
        _full_disk_failure(data_dir, monkeypatch)()  # (the simulated kind: logs fail too)
        assert job.stop(timeout=60) is JobStatus.FAILED
    assert "could not store" in alice.job(job.job_id).info["error"]


@pytest.fixture
def make_gateway_at() -> Iterator[Callable[..., tuple[ThreadedGateway, str, Path]]]:
    started: list[ThreadedGateway] = []

    def make(root: Path, **overrides: Any) -> tuple[ThreadedGateway, str, Path]:
        from qsrv.gateway import GatewayConfig

        data_dir = root / "data"
        token = add_user(data_dir, "alice")[1]
        gateway = ThreadedGateway(GatewayConfig(data_dir=data_dir, port=0, stop_grace_s=2.0,
                                                log_flush_interval_s=0.1, **overrides))
        started.append(gateway)
        return gateway, token, data_dir

    yield make
    for gateway in reversed(started):
        gateway.stop()


def test_sandboxes_left_by_a_crash_are_removed_at_start(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path) -> None:
    add_user(data_dir, "alice")
    stale = data_dir / "jobs" / ("0" * 32) / "work"
    stale.mkdir(parents=True)
    (stale / "leftover.txt").write_text("secret of a dead job")
    make_gateway()
    assert list((data_dir / "jobs").iterdir()) == []
