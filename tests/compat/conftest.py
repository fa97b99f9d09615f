"""Fixtures for the compatibility tests: one real deployment on loopback for the session.

A scheduler (``qsrv scheduler``), a worker (``qsrv worker``) and a gateway (``qsrv gateway
--cluster ...``) run as processes, as an operator starts them; users alice and bob exist, alice
also with a password (tests/_support/deployment.py). Programs are directories written by
``write_program``. A job that must be caught while running connects to a ``Gate`` (a loopback
listener the test owns) and blocks until the test releases it: no sleeping on either side.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests._support import Gate
from tests._support.deployment import Deployment
from tests._support.deployment import deployment as start_deployment


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with start_deployment(tmp_path_factory.mktemp("compat")) as running:
        yield running


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


@pytest.fixture
def gate() -> Iterator[Gate]:
    with Gate() as g:
        yield g


@pytest.fixture(autouse=True)
def _no_inherited_qsrv_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QSRV_") or name.startswith("ENV_GATEWAY_PROVIDER_"):
            monkeypatch.delenv(name, raising=False)
