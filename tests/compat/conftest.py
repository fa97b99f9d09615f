"""Fixtures for the compatibility tests: one real deployment on loopback for the whole module.

A scheduler (``qsrv scheduler``), a worker (``qsrv worker``) and a gateway (``qsrv gateway
--cluster ...``) run as processes, as an operator starts them; users alice and bob exist, alice
also with a password. Programs are directories written by ``write_program``. A job that must be
caught while running connects to a ``Gate`` (a loopback listener the test owns) and blocks until
the test releases it: no sleeping on either side.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qsrv.gateway import add_user, start_gateway_process
from qsrv.gateway._passwords import set_password

ALICE_PASSWORD = "correct horse battery staple"


@dataclass
class Deployment:
    url: str
    data_dir: Path
    alice: str
    bob: str
    cluster_address: str


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("compat")
    cluster_token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    env["QSRV_TOKEN"] = cluster_token
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "qsrv", "scheduler", "--port", "0"], env=env,
        stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = [scheduler]
    try:
        assert scheduler.stdout is not None
        address = scheduler.stdout.readline().split()[-1]
        procs.insert(0, subprocess.Popen(
            [sys.executable, "-m", "qsrv", "worker", "--address", address, "--cpus", "2"],
            env=env))
        data_dir = tmp / "gateway"
        gateway, url = start_gateway_process(address, cluster_token, data_dir)
        procs.insert(0, gateway)
        _, alice = add_user(data_dir, "alice")
        _, bob = add_user(data_dir, "bob")
        set_password(data_dir, "alice", ALICE_PASSWORD)
        yield Deployment(url, data_dir, alice, bob, address)
    finally:
        for proc in procs:  # gateway (it ends its jobs), worker, scheduler
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if scheduler.stdout is not None:
            scheduler.stdout.close()


@pytest.fixture
def write_program(tmp_path: Path) -> Callable[..., Path]:
    """``write_program(main_source, **other_files)``: a working directory with main.py."""
    counter = iter(range(1_000_000))

    def write(source: str, **files: str) -> Path:
        root = tmp_path / f"program-{next(counter)}"
        root.mkdir()
        (root / "main.py").write_text(textwrap.dedent(source))
        for name, text in files.items():
            (root / name).write_text(textwrap.dedent(text))
        return root

    return write


class Gate:
    """A loopback listener a job connects to; the test accepts, then releases it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(60)
        self.port: int = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        conn.settimeout(60)
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.close()


@pytest.fixture(autouse=True)
def _no_inherited_qsrv_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QSRV_") or name.startswith("ENV_GATEWAY_PROVIDER_"):
            monkeypatch.delenv(name, raising=False)
