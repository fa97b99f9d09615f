"""Slow sockets on the gateway's HTTP port while another user keeps working: hundreds of
connections that send half a request and then a header line now and then (slowloris) hold
no worker thread and no slot another client needs; a user's requests are answered meanwhile.
(The cluster's ports get the same treatment in test_cluster_access.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from qsrv.errors import ConfigError
from qsrv.gateway import GatewayConfig, GatewayServer, add_user
from tests._support import wait_for
from tests._support.gateway import ThreadedGateway
from tests.security._cluster import flood
from tests.security.conftest import request

SLOW = 300


def _slow(url: str, count: int) -> list[socket.socket]:
    """``count`` connections from 127.0.0.2 that each sent the start of a request."""
    parts = urlsplit(url)
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            sock.connect((parts.hostname, parts.port))
            sock.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
    return socks


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    """One more header line on every slow socket, over and over, until told to stop."""
    while not stop.is_set():
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow: 1\r\n")
        stop.wait(0.05)


def test_slow_sockets_on_the_gateway_leave_other_users_answered(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path) -> None:
    add_user(data_dir, "alice")
    bob = add_user(data_dir, "bob")[1]
    gateway = make_gateway()
    socks = _slow(gateway.url, SLOW)
    stop = threading.Event()
    trickler = threading.Thread(target=_trickle, args=(socks, stop), daemon=True)
    trickler.start()
    try:
        assert len(socks) == SLOW  # all of them were accepted and are being read
        headers = {"Authorization": f"Bearer {bob}"}
        for _ in range(20):  # bob's requests, one after another, while the flood goes on
            status, body = asyncio.run(request("GET", f"{gateway.url}/v1/jobs", headers))
            assert status == 200, body
        assert trickler.is_alive()  # the flood lasted the whole time
    finally:
        stop.set()
        trickler.join(10)
        for sock in socks:
            sock.close()


def _get(host: str, port: int, token: str, *, source: str = "127.0.0.1",
         sock: socket.socket | None = None) -> bytes:
    """One ``GET /v1/jobs`` on a raw socket (a new one from ``source`` unless given); the
    response's status line and headers."""
    if sock is None:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(10)
        sock.connect((host, port))
    sock.sendall(f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                 f"\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            break
        head += chunk
    return head


def _ended(sock: socket.socket) -> bool:
    """Whether the gateway closed ``sock`` (reading, without waiting, what it sent first)."""
    sock.setblocking(False)
    try:
        while chunk := sock.recv(65536):
            assert chunk.startswith(b"HTTP/1.1 503") or b"HTTP" not in chunk
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def _answer(sock: socket.socket) -> bytes:
    """What the gateway sent on ``sock`` before closing it."""
    sock.settimeout(10)
    got = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def test_one_address_gets_its_share_of_connections_and_others_still_get_in(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path) -> None:
    """Connections from one address past ``max_connections_per_address`` are answered 503 and
    closed; another address is served meanwhile, and once the first address closes some, its
    new connections are served again."""
    add_user(data_dir, "alice")
    bob = add_user(data_dir, "bob")[1]
    gateway = make_gateway(max_connections_per_address=20)
    parts = urlsplit(gateway.url)
    host, port = str(parts.hostname), int(parts.port or 0)
    idle = flood(f"{host}:{port}", 30)  # from 127.0.0.2
    try:
        wait_for(lambda: sum(map(_ended, idle)) >= 10,
                 what="the connections over the share to be closed")
        assert sum(map(_ended, idle)) == 10
        assert gateway.server.port is not None and gateway.server.port.refused == 10
        assert _get(host, port, bob).startswith(b"HTTP/1.1 200")  # from 127.0.0.1
        assert _get(host, port, bob, source="127.0.0.2").startswith(b"HTTP/1.1 503")
    finally:
        for sock in idle:
            sock.close()
    # The closed ones no longer count: 127.0.0.2 is served again.
    wait_for(lambda: _get(host, port, bob, source="127.0.0.2").startswith(b"HTTP/1.1 200"),
             what="127.0.0.2 to be served once its connections closed")


def test_a_refused_connection_is_told_why(make_gateway: Callable[..., ThreadedGateway],
                                         data_dir: Path) -> None:
    add_user(data_dir, "alice")
    gateway = make_gateway(max_connections_per_address=1)
    parts = urlsplit(gateway.url)
    [first] = flood(f"{parts.hostname}:{parts.port}", 1)
    try:
        wait_for(lambda: gateway.server.port is not None and bool(gateway.server.port.open),
                 what="the first connection to be counted")
        [second] = flood(f"{parts.hostname}:{parts.port}", 1)
        answer = _answer(second).decode()
        assert answer.startswith("HTTP/1.1 503 Service Unavailable")
        assert "too many connections from 127.0.0.2 (at most 1)" in answer
        second.close()
    finally:
        first.close()


def test_a_request_head_not_sent_in_time_is_answered_408(
        make_gateway: Callable[..., ThreadedGateway], data_dir: Path) -> None:
    """A socket that trickles header lines is closed at ``header_timeout_s`` with a 408; a
    keep-alive connection that sent its request in time is not, however long it idles."""
    add_user(data_dir, "alice")
    bob = add_user(data_dir, "bob")[1]
    gateway = make_gateway(header_timeout_s=1.0)
    parts = urlsplit(gateway.url)
    host, port = str(parts.hostname), int(parts.port or 0)
    kept = socket.create_connection((host, port), timeout=10)
    socks = _slow(gateway.url, 5)
    stop = threading.Event()
    trickler = threading.Thread(target=_trickle, args=(socks, stop), daemon=True)
    trickler.start()
    try:
        assert _get(host, port, bob, sock=kept).startswith(b"HTTP/1.1 200")
        answers = [_answer(sock) for sock in socks]  # each ends at the deadline
        assert all(a.startswith(b"HTTP/1.1 408 Request Timeout") for a in answers), answers
        assert b"no complete request head within 1 s" in answers[0]
        assert gateway.server.port is not None and gateway.server.port.timed_out == 5
        assert trickler.is_alive()  # they kept sending to the end
        assert _get(host, port, bob, sock=kept).startswith(b"HTTP/1.1 200")  # idle 1 s+
    finally:
        stop.set()
        trickler.join(10)
        kept.close()
        for sock in socks:
            sock.close()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("max_connections_per_address", 0, "max_connections_per_address must be at least 1"),
    ("header_timeout_s", 0.0, "header_timeout_s must be above 0"),
])
def test_the_ports_bounds_must_be_positive(data_dir: Path, option: str, value: float,
                                          message: str) -> None:
    config = dataclasses.replace(GatewayConfig(data_dir=data_dir, port=0), **{option: value})
    with pytest.raises(ConfigError, match=message):
        asyncio.run(GatewayServer(config).start())
