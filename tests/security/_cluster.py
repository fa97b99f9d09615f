"""What the tests of the cluster's doors share: whether a port accepts a token or credential
for a role, floods of idle sockets from another loopback address, and a gateway process on the
test cluster with one user whose job runs a given script."""

from __future__ import annotations

import contextlib
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qsrv.errors import AuthenticationError
from qsrv.gateway import Client, Program, add_user, start_gateway_process
from qsrv.transport import SyncConnection
from tests._support import stop_process
from tests._support.cluster import TOKEN


@contextlib.contextmanager
def alices_gateway(address: str, tmp_path: Path) -> Iterator[Client]:
    """A gateway process on the cluster at ``address`` (its data under ``tmp_path``), and a
    client of its user alice; the gateway is stopped at exit."""
    data_dir = tmp_path / "gateway"
    token = add_user(data_dir, "alice")[1]
    gateway, url = start_gateway_process(address, TOKEN, data_dir)
    try:
        yield Client(url, token)
    finally:
        stop_process(gateway, 30)


def run_script(client: Client, tmp_path: Path, script: str,
               arguments: dict[str, Any] | None = None) -> Any:
    """Run ``script`` (dedented) as a job of ``client``'s user; its saved result."""
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(script))
    return client.run(Program("p", "main.py", folder), arguments).result(timeout=120)


def refusal(address: str, token: str, role: str = "driver") -> str:
    """Why ``address`` refuses ``token`` as ``role`` ("" when it accepts it)."""
    try:
        SyncConnection(address, token, role, timeout=10).close()
    except AuthenticationError as exc:
        return str(exc)
    return ""


def flood(address: str, count: int, source: str = "127.0.0.2") -> list[socket.socket]:
    """``count`` idle connections to ``address`` from the loopback address ``source``."""
    host, port = address.rsplit(":", 1)
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            sock.connect((host.strip("[]"), int(port)))
            socks.append(sock)
    return socks


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def closed(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the peer closed."""
    return sum(closed_by_peer(s) for s in socks)
