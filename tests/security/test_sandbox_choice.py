"""Choosing a sandbox: the default refuses several users without one, an explicit choice that
cannot work refuses to start (never a silent run without isolation), and the gateway never
follows a link a job left where it reads (its result, its files)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from qsrv.errors import ConfigError
from qsrv.gateway import (
    Client,
    ForbiddenError,
    GatewayConfig,
    GatewayServer,
    JobStatus,
    Program,
    add_user,
)
from qsrv.gateway._sandbox import Bubblewrap
from tests._support.gateway import ThreadedGateway
from tests.security.conftest import request


def _no_namespaces(self: Bubblewrap) -> None:
    raise ConfigError("--job-sandbox bwrap: bubblewrap cannot create its namespaces here "
                      "(simulated); choose a sandbox with --job-sandbox")


def _start(data_dir: Path, **config: object) -> None:
    async def go() -> None:
        server = GatewayServer(GatewayConfig(data_dir=data_dir, port=0, **config))  # type: ignore[arg-type]
        await server.start()
        await server.close()

    asyncio.run(go())


def test_the_default_refuses_several_users_without_a_sandbox(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Bubblewrap, "check", _no_namespaces)
    add_user(data_dir, "alice")
    _start(data_dir)  # one user: no sandbox needed
    add_user(data_dir, "bob")
    with pytest.raises(ConfigError, match="--job-sandbox") as refused:
        _start(data_dir)
    assert "2 users" in str(refused.value) and "bwrap" in str(refused.value)
    _start(data_dir, job_sandbox="none")  # an explicit choice is the operator's


def test_a_second_user_added_while_serving_gets_no_unsandboxed_job(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Bubblewrap, "check", _no_namespaces)
    alice_token = add_user(data_dir, "alice")[1]
    gateway = make_gateway()
    alice = Client(gateway.url, alice_token)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "main.py").write_text("print(1)\n")
    assert alice.run(Program("p", "main.py", folder)).wait(timeout=60) is JobStatus.SUCCEEDED
    add_user(data_dir, "bob")  # qsrv user add, while the gateway runs
    with pytest.raises(ForbiddenError, match="--job-sandbox"):
        alice.run("p")


def test_an_explicit_sandbox_that_cannot_run_refuses_to_start(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Bubblewrap, "check", _no_namespaces)
    add_user(data_dir, "alice")
    with pytest.raises(ConfigError, match="namespaces"):
        _start(data_dir, job_sandbox="bwrap")
    monkeypatch.setattr("qsrv.gateway._sandbox.os.geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="root"):
        _start(data_dir, job_sandbox="users")


LINKS = """
import os
from qsrv.gateway import save_result
data = os.environ["DATA_PATH"]
os.symlink({target!r}, os.path.join(data, "leak"))
results = os.environ["RESULTS_PATH"]
os.symlink({target!r}, results)
"""


def test_the_gateway_never_follows_a_jobs_links(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path, tmp_path: Path) -> None:
    """Even unsandboxed, a job that makes its result or one of its files a link to the
    gateway's database gets neither served: the gateway opens what jobs wrote without
    following links, and only regular files."""
    token = add_user(data_dir, "alice")[1]
    gateway = make_gateway(job_sandbox="none")
    folder = tmp_path / "p"
    folder.mkdir()
    target = str(data_dir / "gateway.sqlite3")
    (folder / "main.py").write_text(textwrap.dedent(LINKS.format(target=target)))
    job = Client(gateway.url, token).run(Program("p", "main.py", folder))
    assert job.wait(timeout=60) is JobStatus.FAILED
    assert "cannot be read" in job.info["error"] and "SQLite" not in job.logs()
    headers = {"Authorization": f"Bearer {token}"}
    status, _ = asyncio.run(request(
        "GET", f"{gateway.url}/api/v1/files/download?function=p&file=leak", headers))
    assert status == 404
    status, listing = asyncio.run(request(
        "GET", f"{gateway.url}/api/v1/files?function=p", headers))
    assert status == 200 and listing == {"results": []}
