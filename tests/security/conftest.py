"""Two tenants on one real deployment, as the attacker of the issue had it: ``qsrv scheduler``
and ``qsrv worker`` started through the CLI, a gateway process joined to them with a chosen
``--job-sandbox``, users alice (the attacker) and bob.

Sandboxes are never skipped silently: bubblewrap must be installed (CI installs it); the
``users`` sandbox needs root, and with ``QSRV_REQUIRE_SANDBOXES=1`` (CI) a missing prerequisite
fails instead of skipping with its reason.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import qsrv
from qsrv.gateway import GatewayConfig, add_user, set_password, start_gateway_process
from tests._support import Gate, wait_for
from tests._support.cluster import Cluster, free_port
from tests._support.gateway import ThreadedGateway
from tests._support.processes import Proc, stop_process
from tests._support.sandboxes import require


def require_bwrap() -> None:
    require(shutil.which("bwrap") is not None,
            "bubblewrap is not installed (apt-get install bubblewrap): the bwrap sandbox "
            "cannot be tested")


@dataclass
class Deployment:
    url: str
    data_dir: Path
    cluster: str
    tokens: dict[str, str]  # user name -> token
    ids: dict[str, int]
    gateway: Proc
    procs: list[Proc] = field(default_factory=list)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A CLI-started scheduler and one worker "w" (2 CPUs), ready; no driver of this process
    connected before or after."""
    qsrv.shutdown()
    c = Cluster(free_port())
    try:
        c.worker("w", "--cpus", "2")
        wait_for(lambda: c.ready({"w"}), what="the worker")
        yield c
    finally:
        qsrv.shutdown()
        c.stop()


@pytest.fixture
def gate() -> Iterator[Gate]:
    with Gate(timeout=60) as g:
        yield g


def qsrv_env(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    env["QSRV_TOKEN"] = token
    return env


@contextmanager
def deployment(root: Path, sandbox: str, users: tuple[str, str] = ("alice", "bob"),
               *, extra: tuple[str, ...] = ()) -> Iterator[Deployment]:
    """The deployment; stopped gateway first (it ends its jobs), then worker and scheduler."""
    cluster_token = secrets.token_hex(16)
    env = qsrv_env(cluster_token)
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "qsrv", "scheduler", "--port", "0"], env=env,
        stdout=subprocess.PIPE, text=True)
    procs: list[Proc] = [scheduler]
    try:
        assert scheduler.stdout is not None
        address = scheduler.stdout.readline().split()[-1]
        procs.insert(0, subprocess.Popen(
            [sys.executable, "-m", "qsrv", "worker", "--address", address, "--cpus", "2"],
            env=env))
        data_dir = root / "gateway"
        tokens, ids = {}, {}
        for name in users:  # before the gateway starts: it checks its sandbox against them
            user, tokens[name] = add_user(data_dir, name)
            ids[name] = user.user_id
            set_password(data_dir, name, secrets.token_urlsafe(12))
        gateway, url = start_gateway_process(
            address, cluster_token, data_dir, extra_args=("--job-sandbox", sandbox, *extra))
        procs.insert(0, gateway)
        yield Deployment(url, data_dir, address, tokens, ids, gateway, procs)
    finally:
        for proc in procs:
            stop_process(proc, 30)


async def request(method: str, url: str, headers: dict[str, str] | None = None,
                  **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, \
            session.request(method, url, headers=headers or {}, **kwargs) as resp:
        body = await resp.read()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body


def program_dir(root: Path, source: str, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(textwrap.dedent(source))
    for name, text in files.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_gateway(data_dir: Path) -> Iterator[Callable[..., ThreadedGateway]]:
    """Gateways in this process (``ThreadedGateway``); stopped at the end."""
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


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def upload_form(archive: bytes, title: str = "p", entrypoint: str = "main.py"
                ) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps({"title": title, "entrypoint": entrypoint}),
                   content_type="application/json")
    form.add_field("archive", archive, filename="a.tar.gz", content_type="application/gzip")
    return form


def long_name_bomb(declared: int = 2 << 30, padding: int = 8 << 20) -> bytes:
    """A gzip whose tar starts with a GNU long-name header declaring ``declared`` bytes."""
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = declared
    return gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT) + bytes(padding), 9)


def zeros_bomb(size: int = 250 << 20) -> bytes:
    """A bz2 of ``size`` zero bytes (a few hundred bytes)."""
    return bz2.compress(bytes(size), 9)


def headed_zeros_bomb(size: int) -> bytes:
    """A bz2 tar whose one member holds ``size`` zero bytes: all of it must be decompressed
    to reach the end of the archive."""
    info = tarfile.TarInfo("main.py")
    info.size = size
    body = info.tobuf(format=tarfile.GNU_FORMAT) + bytes(size + (-size % 512)) + bytes(1024)
    return bz2.compress(body, 9)
