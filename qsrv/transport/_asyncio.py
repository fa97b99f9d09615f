"""asyncio carriage for the sans-IO `Connection`: bytes in, messages out, one write per tick.

Reads go straight into the decoder's buffers (BufferedProtocol). Messages queued with `send`
during one event-loop tick leave as one frame (one `writelines`, scatter/gather). A protocol
error closes this connection only, with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from qsrv.errors import AuthenticationError, ConnectionLostError, ProtocolError
from qsrv.protocol import Connection, State
from qsrv.transport._sync import parse_address, unix_path
from qsrv.transport._tls import client_context, closed_in_handshake, tls_failure

log = logging.getLogger("qsrv.transport")


class RateLimitedLog:
    """Warnings about one kind of event, at most one per key (a peer's address) per
    `interval` seconds; the next one says how many were held back meanwhile."""

    def __init__(self, interval: float = 10.0, max_keys: int = 4096, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warn(self, key: str, message: str, *args: object) -> bool:
        """Log it (True) or count it as held back (False)."""
        host = key.rsplit(":", 1)[0]  # one peer, whatever its port
        now = self._clock()
        last = self._last.get(host)
        if last is not None and now - last < self.interval:
            self._held[host] = self._held.get(host, 0) + 1
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
            self._held.clear()
        self._last[host] = now
        held = self._held.pop(host, 0)
        suffix = f" ({held} more from there in the last {self.interval:g} s)" if held else ""
        log.warning(message + suffix, *args)
        return True


refused = RateLimitedLog()  # refused authentications, per peer address


class FramedProtocol(asyncio.BufferedProtocol):
    """One connection. Callbacks: `on_accept(self)` (server, after authentication; must call
    `accept` or `close`), `on_open(self)` (client, after Welcome), `on_messages(self, msgs)`,
    `on_close(self, reason)`."""

    def __init__(self, conn: Connection, *,
                 on_messages: Callable[[FramedProtocol, list[Any]], None],
                 on_close: Callable[[FramedProtocol, str], None],
                 on_accept: Callable[[FramedProtocol], None] | None = None,
                 on_open: Callable[[FramedProtocol], None] | None = None,
                 handshake_timeout: float = 10.0) -> None:
        self.conn = conn
        self.on_messages = on_messages
        self.on_close = on_close
        self.on_accept = on_accept
        self.on_open = on_open
        self.handshake_timeout = handshake_timeout
        self.transport: Any = None  # asyncio or uvloop transport
        self.peer = "?"
        self.id = 0  # set by the owner
        self._pending: list[Any] = []
        self._flush_scheduled = False
        self._closed = False
        self._close_reason = ""
        self._deadline: asyncio.TimerHandle | None = None
        self.error: ProtocolError | None = None  # what made us close, if the peer broke rules
        self.pending = False  # a server's connection not yet authenticated (owner's count)
        self.refuse = ""  # set by the owner: close at once with this reason
        # Set by the owner: called once the transport is known (its peer too); returns why
        # the connection is refused ("" to go on).
        self.admit: Callable[[FramedProtocol], str] | None = None
        self._tcp = False
        self._loop = asyncio.get_event_loop()

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.refuse and self.admit is not None:
            self.refuse = self.admit(self)
        if self.refuse:
            self.close(self.refuse)
            return
        peer = transport.get_extra_info("peername")
        self._tcp = isinstance(peer, tuple)
        self.peer = f"{peer[0]}:{peer[1]}" if self._tcp else str(peer)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._deadline = self._loop.call_later(self.handshake_timeout, self._handshake_expired)
        if not self.conn.server:
            self.transport.writelines(self.conn.initiate())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self.conn.buffer_updated(nbytes)
            was_open = self.conn.state is State.OPEN
            messages = self.conn.receive()
            replies = self.conn.data_to_send()
            if replies and self.transport is not None:
                self.transport.writelines(replies)
            if not was_open:
                self._after_handshake_step()
            if messages and not self._closed:
                self.on_messages(self, messages)
        except ProtocolError as exc:
            self.error = exc
            replies = self.conn.data_to_send()
            if replies and self.transport is not None:
                self.transport.writelines(replies)
            if self.conn.server and isinstance(exc, AuthenticationError):
                refused.warn(self.peer, "refused a peer at %s: %s", self.peer, exc)
                self.close(f"authentication refused: {exc}", level=logging.DEBUG)
            else:
                self.close(f"protocol error from {self.peer}: {exc}")

    def _after_handshake_step(self) -> None:
        state = self.conn.state
        if state is State.ACCEPTING and self.on_accept is not None:
            self._cancel_deadline()
            self.on_accept(self)
        elif state is State.OPEN and not self.conn.server:
            self._cancel_deadline()
            if self.on_open is not None:
                self.on_open(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self.conn.server and self.conn.state is State.WAIT_AUTH and not self._close_reason:
            # it hung up on our proof: its token is not ours (or it is not a qsrv peer)
            refused.warn(self.peer, "refused a peer at %s: it left during the token challenge "
                         "(a wrong cluster token at its end?)", self.peer)
        reason = self._close_reason or (f"connection lost: {exc}" if exc else "peer closed")
        if not self._close_reason and not self.conn.server and not self.conn.is_open() \
                and self._tcp:  # the scheduler hung up mid-handshake: TLS at one end only?
            tls = self.transport is not None and \
                self.transport.get_extra_info("sslcontext") is not None
            reason = closed_in_handshake(self.peer, tls)
        self._closed = True
        self.on_close(self, reason)

    def eof_received(self) -> bool | None:
        return None  # close

    # -- sending -------------------------------------------------------------------------------
    def accept(self, client_no: int, info: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.writelines(self.conn.welcome(client_no, info))

    def send(self, msg: Any) -> None:
        if self._closed:
            return
        self._pending.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending or self._closed or self.transport is None:
            self._pending.clear()
            return
        msgs, self._pending = self._pending, []
        try:
            pieces = self.conn.send(msgs)
        except ProtocolError as exc:
            self.close(f"cannot send: {exc}")
            return
        self.transport.writelines(pieces)

    def close(self, reason: str, *, level: int = logging.WARNING) -> None:
        """Close, logging `reason` (if any) at `level`: a warning for what went wrong here
        (protocol errors, expired handshakes); the owner passes a lower level for closes it
        decided itself (a cancelled task's executor), which its own log already tells."""
        if self._closed:
            return
        if reason:
            log.log(level, "closing connection %s: %s", self.name, reason)
        self._close_reason = reason
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def name(self) -> str:
        """The peer as a log line should name it: its role and number once authenticated
        (a Unix socket's peer has no address), and its address when it has one."""
        address = self.peer if self.peer not in ("", "?") else ""
        role, number = self.conn.role, self.conn.client_no
        if not (role and number):  # not authenticated (yet): all we know is where it is
            return address or "(unauthenticated peer)"
        return f"{role} {number} ({address})" if address else f"{role} {number}"

    @property
    def closed(self) -> bool:
        return self._closed

    # -- internals -------------------------------------------------------------------------------
    def _handshake_expired(self) -> None:
        if self.conn.state is not State.OPEN:
            self.close(f"no completed handshake within {self.handshake_timeout:g} s")

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


async def open_client(address: str, factory: Callable[[], FramedProtocol]) -> FramedProtocol:
    """A client connection to the scheduler at ``address`` (``HOST:PORT``, TLS when QSRV_TLS_*
    say so, or ``unix:PATH``), carried by the protocol ``factory`` makes; its handshake then
    runs on its own. Raises ConnectionLostError when the scheduler cannot be reached (or broke
    off TLS), AuthenticationError when its certificate is not accepted."""
    loop = asyncio.get_running_loop()
    path = unix_path(address)
    tls: ssl.SSLContext | None = None
    try:
        if path:
            _, proto = await loop.create_unix_connection(factory, path)
        else:
            host, port = parse_address(address)
            tls = client_context()
            _, proto = await loop.create_connection(
                factory, host, port, ssl=tls, server_hostname=host if tls else None)
    except ssl.SSLError as exc:
        raise tls_failure(address, exc) from exc
    except OSError as exc:
        if tls is not None and not isinstance(exc, ConnectionRefusedError | TimeoutError):
            raise tls_failure(address, exc) from exc  # reset in the middle of TLS
        raise ConnectionLostError(f"cannot reach the scheduler at {address}: {exc}") from exc
    return proto
