"""Slow sockets on the gateway's HTTP port while another user keeps working: hundreds of
connections that send half a request and then a header line now and then (slowloris) hold
no worker thread and no slot another client needs; a user's requests are answered meanwhile.
(The cluster's ports get the same treatment in test_cluster_access.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from qsrv.gateway import add_user
from tests._support.gateway import ThreadedGateway
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
