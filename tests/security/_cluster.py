"""What the tests of the cluster's doors share: whether a port accepts a token or credential
for a role, and floods of idle sockets from another loopback address."""

from __future__ import annotations

import contextlib
import socket

from qsrv.errors import AuthenticationError
from qsrv.transport import SyncConnection


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
