"""The scheduler process: a TCP server that feeds `SchedulerState` and carries out its actions.

All decisions live in `SchedulerState`; this module only moves bytes, keeps time and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import secrets
import socket
import time
from typing import Any

from qsrv.errors import ConfigError
from qsrv.protocol import DEFAULT_LIMITS, Connection, Limits
from qsrv.scheduler._events import (
    Action,
    Close,
    Connected,
    Disconnected,
    Log,
    ReceivedBatch,
    Send,
    Tick,
)
from qsrv.scheduler._gatekeeper import Gatekeeper
from qsrv.scheduler._state import SchedulerState
from qsrv.transport import FramedProtocol

log = logging.getLogger("qsrv.scheduler")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


class SchedulerServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 7420, token: str | None = None, *,
                 limits: Limits = DEFAULT_LIMITS, heartbeat_timeout: float = 5.0,
                 handshake_timeout: float = 10.0, tick_interval: float = 0.25,
                 max_pending: int = 128,
                 max_pending_per_host: int = 16, ssl: Any = None, unix: str | None = None) -> None:
        if not token and not is_loopback(host):
            raise ConfigError(
                f"refusing to listen on {host} without a token: anyone who reaches the port "
                "could run code on the cluster. Pass --token (or QSRV_TOKEN), or bind 127.0.0.1."
            )
        self.host = host
        self.port = port
        self.token = token or new_token()
        self.limits = limits
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending  # connections not yet authenticated, at most
        # ... and from one address (see _gatekeeper); also scoped credentials, revocations
        self.gate = Gatekeeper(max_pending, max(1, min(max_pending_per_host, max_pending)),
                               close_conn=self._close_conn)
        self.ssl = ssl
        self.unix = unix  # also listen on this Unix socket (same-machine clients, no TCP)
        self._unix_server: asyncio.AbstractServer | None = None
        self.tick_interval = tick_interval
        self.state = SchedulerState(heartbeat_timeout=heartbeat_timeout)
        self.protocols: dict[int, FramedProtocol] = {}
        self._conn_ids = itertools.count(1)
        # A random start keeps ids minted before a restart from colliding with new ones.
        self._client_nos = itertools.count(secrets.randbelow(2**22) + 1)
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        self.state.handle(Tick(time.monotonic()))
        self._server = await loop.create_server(self._protocol, self.host, self.port,
                                                reuse_address=True, backlog=1024, ssl=self.ssl)
        if self.unix:
            self._unix_server = await loop.create_unix_server(self._protocol, self.unix,
                                                              backlog=1024)
            os.chmod(self.unix, 0o600)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        if sock.family == socket.AF_INET6:
            self.host = self.host or "::1"
        self._ticker = asyncio.ensure_future(self._tick_forever())
        log.info("scheduler listening on %s", self.address)
        return self.address

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        servers = [s for s in (self._server, self._unix_server) if s is not None]
        for server in servers:
            server.close()
        for proto in list(self.protocols.values()):
            proto.close("")
        self.gate.close_all()
        for server in servers:
            await server.wait_closed()
        if self.unix:
            with contextlib.suppress(OSError):
                os.unlink(self.unix)

    # ---- connections --------------------------------------------------------------------------
    def _protocol(self) -> FramedProtocol:
        conn = Connection(server=True, token=self.token, limits=self.limits,
                          credentials=self.gate.refusal)
        proto = FramedProtocol(conn, on_messages=self._on_messages, on_close=self._on_close,
                               on_accept=self._on_accept,
                               handshake_timeout=self.handshake_timeout)
        proto.admit = self.gate.admit  # per-address and global limits of waiting connections
        return proto

    def _on_accept(self, proto: FramedProtocol) -> None:
        self.gate.authenticated(proto)
        if proto.conn.role == "gateway":  # the cluster token's holder, revoking credentials
            self.gate.serve_gateway(proto)
            return
        if proto.conn.role not in ("driver", "worker", "executor"):
            assert proto.transport is not None
            proto.transport.writelines(proto.conn.reject(
                f"role {proto.conn.role!r} belongs to a worker agent's store, not the scheduler"))
            proto.close(f"refused a {proto.conn.role!r} peer")
            return
        conn_id = next(self._conn_ids)
        client_no = next(self._client_nos)
        proto.id = conn_id
        self.protocols[conn_id] = proto
        self.gate.opened(proto)
        proto.accept(client_no, {"conn": conn_id})
        self._apply(self.state.handle(Connected(conn_id, proto.conn.role, client_no,
                                                proto.conn.tenant)))

    def _close_conn(self, conn: int, reason: str) -> None:
        proto = self.protocols.get(conn)
        if proto is not None:
            proto.close(reason)

    def _on_messages(self, proto: FramedProtocol, messages: list[Any]) -> None:
        self._apply(self.state.handle(ReceivedBatch(proto.id, messages)))

    def _on_close(self, proto: FramedProtocol, reason: str) -> None:
        self.gate.closed(proto)
        if proto.id and self.protocols.pop(proto.id, None) is not None:
            self._apply(self.state.handle(Disconnected(proto.id, reason)))

    def _apply(self, actions: list[Action]) -> None:
        protocols = self.protocols
        for action in actions:
            if type(action) is Send:
                proto = protocols.get(action.conn)
                if proto is not None:
                    proto.send(action.msg)
            elif type(action) is Close:
                proto = protocols.get(action.conn)
                if proto is not None:
                    proto.close(action.reason)
            elif type(action) is Log:
                log.log(logging.getLevelName(action.level.upper()), "%s", action.text)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            self._apply(self.state.handle(Tick(time.monotonic())))


def install_uvloop() -> None:
    """Use uvloop's event loop where it is installed (it is a dependency on POSIX)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
