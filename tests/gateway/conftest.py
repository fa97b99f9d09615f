"""Fixtures for the gateway tests: real gateways on loopback, real SQLite files, real jobs.

A gateway runs in a background thread with its own event loop (``ThreadedGateway``) so tests
can use the synchronous client as users do; async tests use ``GatewayServer`` directly.
Programs are small Python files written into a temporary working directory. A job that must
be caught while running connects to a ``Gate`` (a loopback listener owned by the test; the
job's side is ``GATE_CLIENT``) and blocks until the test lets it go: no sleeping on either
side. Both live in tests/_support.
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qsrv.gateway import Client, GatewayConfig, Program, add_user
from tests._support import Gate
from tests._support.gateway import ThreadedGateway


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


@pytest.fixture
def gate() -> Iterator[Gate]:
    with Gate(timeout=30) as g:
        yield g


@pytest.fixture(autouse=True)
def _no_inherited_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QSRV_GATEWAY", "QSRV_GATEWAY_TOKEN", "QSRV_ADDRESS", "QSRV_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert "QSRV_JOB_RESULT_PATH" not in os.environ
