"""The scheduler process: a TCP server that feeds `SchedulerState` and carries out its actions.

All decisions live in `SchedulerState`; this module only moves bytes, keeps time and logs.

Responsive under any burst: the work of one event-loop turn is bounded. A small batch of
messages is handled as it is read; a large one (a frame of thousands of submits or cancels, a
ref update of a million ids) waits in its connection's backlog, whose reading is paused, and
is handled `SLICE` units at a time, one slice per turn, connections taking turns -- heartbeats
and small requests from others are read and answered between slices. A ticker measures how
late the loop runs (`lag`) every `probe_interval` and tells the state machine how long it
was stalled (Tick.stalled), which liveness leaves out: a heartbeat the scheduler did not read
because it was busy is not the worker's fault. After the state compacts memory following a
drain, a full collection runs and free heap pages go back to the system (`qsrv._memory.trim`).

Full garbage collections are throttled while the server runs (`FullCollections`): CPython
starts one each time the tracked objects grew by a quarter, which, while a million tasks
come in, means a few dozen walks over everything, up to half a second each. The young
generations still collect as usual; full ones run from the ticker, at most every
`GC_INTERVAL` seconds and at most `GC_SHARE` of the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import itertools
import logging
import os
import secrets
import socket
import time
from collections import deque
from typing import Any

from qsrv._memory import trim
from qsrv.errors import ConfigError
from qsrv.protocol import (
    DEFAULT_LIMITS,
    Connection,
    Limits,
    ObjectsCopied,
    RefUpdate,
    Subscribe,
    TaskReturned,
)
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
from qsrv.scheduler._monitor import Monitor
from qsrv.scheduler._state import SchedulerState
from qsrv.transport import FramedProtocol

log = logging.getLogger("qsrv.scheduler")

GC_INTERVAL = 10.0  # seconds between full collections, at least
GC_SHARE = 0.05  # of the time spent in full collections, at most
_NEVER = float("inf")

# Work units handled per event-loop turn: a message is one unit, a list of ids in it one per
# id (a ref update of a million ids is a million units, cut into slices).
SLICE = 1024
_LISTS: dict[type[Any], tuple[str, ...]] = {
    RefUpdate: ("add", "drop"), Subscribe: ("ids",), ObjectsCopied: ("ids",),
    TaskReturned: ("task_ids",)}


def weight(messages: list[Any]) -> int:
    """Work units of these messages (see SLICE)."""
    total = len(messages)
    for msg in messages:
        fields = _LISTS.get(type(msg))
        if fields is not None:
            total += sum(len(getattr(msg, f)) for f in fields)
    return total


def cut(msg: Any, size: int = SLICE) -> list[Any]:
    """A message carrying long lists of ids as several, each at most ``size`` ids, with the
    same effect in order (a ref update: its adds, then its drops)."""
    if type(msg) is RefUpdate:
        return ([RefUpdate(msg.add[i : i + size], []) for i in range(0, len(msg.add), size)]
                + [RefUpdate([], msg.drop[i : i + size])
                   for i in range(0, len(msg.drop), size)]) or [msg]
    if type(msg) is Subscribe or type(msg) is ObjectsCopied:
        return [type(msg)(msg.ids[i : i + size]) for i in range(0, len(msg.ids), size)] or [msg]
    if type(msg) is TaskReturned:
        return [TaskReturned(msg.task_ids[i : i + size])
                for i in range(0, len(msg.task_ids), size)] or [msg]
    return [msg]


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
                 probe_interval: float = 0.05, max_pending: int = 128,
                 max_pending_per_host: int = 16, ssl: Any = None,
                 unix: str | None = None) -> None:
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
        self.probe_interval = min(probe_interval, tick_interval)  # loop lag measured this often
        self.state = SchedulerState(heartbeat_timeout=heartbeat_timeout)
        self.monitor = Monitor(self.state, send=self._send_to)  # dashboards, timelines, output
        # Messages received but not yet handled, by connection; connections with a backlog,
        # in the order they take turns.
        self._backlog: dict[int, deque[Any]] = {}
        self._turns: deque[int] = deque()
        self._draining = False
        self._closed_with_backlog: dict[int, str] = {}  # conn -> why, once its backlog is done
        self._compactions = 0
        self._full_gc = FullCollections()
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
        self._full_gc.take_over()
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
        self._full_gc.give_back()
        servers = [s for s in (self._server, self._unix_server) if s is not None]
        for server in servers:
            server.close()
        for proto in list(self.protocols.values()):
            proto.close("")
        self.gate.close_all()
        self.monitor.close_all()
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
        if proto.conn.role == "monitor":  # read-only: never a client of the state machine
            self.monitor.serve(proto)
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

    def _send_to(self, conn: int, msg: Any) -> None:
        proto = self.protocols.get(conn)
        if proto is not None:
            proto.send(msg)

    def _close_conn(self, conn: int, reason: str) -> None:
        proto = self.protocols.get(conn)
        if proto is not None:
            proto.close(reason)
        self._drop_backlog(conn)

    def _on_messages(self, proto: FramedProtocol, messages: list[Any]) -> None:
        conn = proto.id
        messages = self.monitor.observe(conn, messages)
        if conn not in self._backlog and weight(messages) <= SLICE:
            self._apply(self.state.handle(ReceivedBatch(conn, messages)))
            return
        # A burst: handled a slice per turn; this connection is not read meanwhile.
        backlog = self._backlog.get(conn)
        if backlog is None:
            backlog = self._backlog[conn] = deque()
            self._turns.append(conn)
            if proto.transport is not None and not proto.closed:
                proto.transport.pause_reading()
        for msg in messages:
            if type(msg) in _LISTS and weight([msg]) > SLICE:
                backlog.extend(cut(msg))
            else:
                backlog.append(msg)
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        """One turn's share of the backlogs: at most SLICE units, connections in turn."""
        try:
            self._drain_slice()
        finally:
            if self._turns:
                asyncio.get_running_loop().call_soon(self._drain)
            else:
                self._draining = False

    def _drain_slice(self) -> None:
        budget = SLICE
        turns, backlogs = self._turns, self._backlog
        while budget > 0 and turns:
            conn = turns[0]
            backlog = backlogs[conn]
            batch = []
            while backlog and budget > 0:
                msg = backlog.popleft()
                batch.append(msg)
                budget -= 1 if type(msg) not in _LISTS else weight([msg])
            if batch:
                self._apply(self.state.handle(ReceivedBatch(conn, batch)))
                if backlogs.get(conn) is not backlog:
                    continue  # closed by the scheduler meanwhile: its backlog was dropped
            if backlog:
                turns.rotate(-1)
                continue
            turns.popleft()
            self._caught_up(conn)

    def _caught_up(self, conn: int) -> None:
        """A connection's backlog is handled: read it again, or finish closing it."""
        del self._backlog[conn]
        why = self._closed_with_backlog.pop(conn, None)
        if why is not None:
            if self.protocols.pop(conn, None) is not None:
                self._apply(self.state.handle(Disconnected(conn, why)))
            return
        proto = self.protocols.get(conn)
        if proto is not None and proto.transport is not None and not proto.closed:
            proto.transport.resume_reading()

    def _drop_backlog(self, conn: int) -> None:
        """The scheduler closed this connection: the rest of what it sent is ignored."""
        if self._backlog.pop(conn, None) is not None:
            self._turns.remove(conn)

    def _on_close(self, proto: FramedProtocol, reason: str) -> None:
        self.gate.closed(proto)
        if not proto.id:
            return
        if proto.id in self._backlog:  # what it sent before it went is handled first
            self._closed_with_backlog[proto.id] = reason
            return
        if self.protocols.pop(proto.id, None) is not None:
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
                if proto is not None:  # the state machine logs what is worth a warning
                    proto.close(action.reason, level=logging.INFO)
                if action.conn in self._backlog:
                    self._drop_backlog(action.conn)
            elif type(action) is Log:
                log.log(logging.getLevelName(action.level.upper()), "%s", action.text)

    async def _tick_forever(self) -> None:
        """Every `probe_interval`: how late this wake-up came (the loop's lag); every
        `tick_interval`: a Tick, with the time the loop was stalled since the last one."""
        clock = time.monotonic
        last_tick = clock()
        stalled = lag = 0.0
        release_again = _NEVER
        while True:
            due = clock() + self.probe_interval
            await asyncio.sleep(self.probe_interval)
            now = clock()
            late = max(0.0, now - due)
            stalled += late
            lag = max(lag, late)
            if now - last_tick >= self.tick_interval * 0.999:
                self._apply(self.state.handle(Tick(now, stalled, lag)))
                last_tick, stalled, lag = now, 0.0, 0.0
                self.monitor.tick(now)
                if self.state.compactions != self._compactions or now >= release_again:
                    # after a large drain, and once more when what followed it settled
                    drained = self.state.compactions != self._compactions
                    release_again = now + 2.0 if drained else _NEVER
                    self._compactions = self.state.compactions
                    self._full_gc.run(now)
                    trim()  # the drain's pages back to the system
                else:
                    self._full_gc.maybe(now)

    def backlog(self) -> int:
        """Messages received and not yet handled (all connections)."""
        return sum(len(b) for b in self._backlog.values())


class FullCollections:
    """Full garbage collections on the server's schedule instead of CPython's (see the module
    docstring). A full collection also empties the interpreter's free lists, which pin memory
    a drain freed."""

    def __init__(self) -> None:
        self._saved: tuple[int, int, int] | None = None
        self._next = 0.0

    def take_over(self) -> None:
        if self._saved is None:
            self._saved = gc.get_threshold()
            young, middle, _ = self._saved
            gc.set_threshold(young, middle, 2**30)  # the oldest generation: never on its own

    def give_back(self) -> None:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def maybe(self, now: float) -> None:
        """A full collection if one is due and objects reached the oldest generation since."""
        if self._saved is not None and now >= self._next and gc.get_count()[2] > 0:
            self.run(now)

    def run(self, now: float) -> None:
        t0 = time.monotonic()
        gc.collect()
        took = time.monotonic() - t0
        self._next = now + max(GC_INTERVAL, took / GC_SHARE)
        if took > 0.1:
            log.debug("full garbage collection: %.0f ms", took * 1e3)


def install_uvloop() -> None:
    """Use uvloop's event loop where it is installed (it is a dependency on POSIX)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
