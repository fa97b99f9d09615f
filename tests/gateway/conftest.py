"""Fixtures for the gateway tests: real gateways on loopback, real SQLite files, real jobs.

A gateway runs in a background thread with its own event loop (``ThreadedGateway``) so tests
can use the synchronous client as users do; async tests use ``GatewayServer`` directly.
Programs are small Python files written into a temporary working directory. A job that must
be caught while running connects to a ``Gate`` (a loopback listener owned by the test) and
blocks until the test lets it go: no sleeping on either side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qsrv.gateway import Client, GatewayConfig, GatewayServer, Program, add_user


class ThreadedGateway:
    """A GatewayServer on 127.0.0.1:0 served by an event loop in a daemon thread."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GatewayServer(config)
        self.url = self.call(self.server.start())

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_gateway(data_dir: Path) -> Iterator[Callable[..., ThreadedGateway]]:
    started: list[ThreadedGateway] = []

    def make(**overrides: Any) -> ThreadedGateway:
        config = GatewayConfig(data_dir=data_dir, port=0, stop_grace_s=2.0,
                               log_flush_interval_s=0.1)
        gateway = ThreadedGateway(dataclasses.replace(config, **overrides))
        started.append(gateway)
        return gateway

    yield make
    for gateway in reversed(started):
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., ThreadedGateway]) -> ThreadedGateway:
    return make_gateway()


@pytest.fixture
def alice_token(data_dir: Path) -> str:
    return add_user(data_dir, "alice")[1]


@pytest.fixture
def bob_token(data_dir: Path) -> str:
    return add_user(data_dir, "bob")[1]


@pytest.fixture
def alice(gateway: ThreadedGateway, alice_token: str) -> Client:
    return Client(gateway.url, alice_token)


@pytest.fixture
def bob(gateway: ThreadedGateway, bob_token: str) -> Client:
    return Client(gateway.url, bob_token)


@pytest.fixture
def make_program(tmp_path: Path) -> Callable[..., Program]:
    """``make_program(title, source, **extra_files)``: a Program whose main.py is ``source``."""
    counter = iter(range(1_000_000))

    def make(title: str, source: str, env_vars: dict[str, str] | None = None,
             **files: str) -> Program:
        root = tmp_path / f"program-{next(counter)}"
        root.mkdir()
        (root / "main.py").write_text(textwrap.dedent(source))
        for name, text in files.items():
            (root / name).write_text(textwrap.dedent(text))
        return Program(title=title, entrypoint="main.py", working_dir=root, env_vars=env_vars)

    return make


class Gate:
    """A loopback listener a job connects to; the test accepts, reads, and releases it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(30)
        self.port: int = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        conn.settimeout(30)
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()


# Source for a job that reports to the gate and blocks until released.
GATE_CLIENT = """
import socket
def gate(port, message=b"started"):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(message + b"\\n")
    s.recv(1)  # blocks until the test sends a byte or closes
    return s
"""


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.close()


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def pid_exists_env(pid: int, job_id: str) -> bool:
    try:
        return f"QSRV_JOB_ID={job_id}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _no_inherited_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QSRV_GATEWAY", "QSRV_GATEWAY_TOKEN", "QSRV_ADDRESS", "QSRV_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert "QSRV_JOB_RESULT_PATH" not in os.environ
