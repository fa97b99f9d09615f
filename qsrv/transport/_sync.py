"""A blocking-socket carriage for the sans-IO `Connection` (executors, CLI tools).

One thread reads at a time; sends are serialised by a lock and use sendmsg (scatter/gather).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from qsrv.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionClosedError,
    ConnectionLostError,
)
from qsrv.protocol import DEFAULT_LIMITS, Buffer, Connection, Limits, State
from qsrv.transport._tls import client_context, closed_in_handshake, tls_failure


def unix_path(address: str) -> str | None:
    """The socket path of a ``unix:/path`` address (the local cluster's), else None."""
    return address[len("unix:"):] if address.startswith("unix:") else None


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address must look like HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class SyncConnection:
    def __init__(self, address: str, token: str, role: str, *, timeout: float = 10.0,
                 limits: Limits = DEFAULT_LIMITS, tls: ssl.SSLContext | None = None) -> None:
        """Connect and authenticate. TLS comes from `tls`, else from QSRV_TLS_* if set."""
        path = unix_path(address)
        tls = None if path else (tls or client_context())  # a local socket needs no TLS
        try:
            if path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(path)
                except OSError:
                    sock.close()
                    raise
            else:
                host, port = parse_address(address)
                sock = socket.create_connection((host, port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise ConnectionLostError(f"cannot reach the scheduler at {address}: {exc}") from exc
        if tls is None:
            self.sock = sock
        else:
            try:
                self.sock = tls.wrap_socket(sock, server_hostname=host)
            except OSError as exc:  # ssl.SSLError, or a reset in the middle of it
                sock.close()
                raise tls_failure(address, exc) from exc
        self.tls = tls is not None
        self.address = "" if path else address  # a TCP client's: named in handshake errors
        self.conn = Connection(server=False, token=token, role=role, limits=limits)
        self._send_lock = threading.Lock()
        self._closed_here = False
        self._inbox: list[Any] = []
        try:
            self.write(self.conn.initiate())
            self._handshake()
        except BaseException:
            self.sock.close()
            raise
        self._ready()

    @classmethod
    def accept(cls, sock: socket.socket, token: str, info: dict[str, Any], *,
               roles: frozenset[str], client_no: int = 1, timeout: float = 10.0,
               limits: Limits = DEFAULT_LIMITS,
               credentials: Callable[[str], str | None] | None = None,
               derived_roles: frozenset[str] = frozenset()) -> SyncConnection:
        """The server side over an accepted socket: run the challenge, admit a peer whose role
        is in ``roles``. ``timeout`` is the whole handshake's deadline: bytes trickling in do
        not extend it. Scoped credentials are accepted only with ``credentials``, for
        ``derived_roles`` (see Connection). Raises ProtocolError/ConnectionLostError (the
        socket is closed)."""
        self = cls.__new__(cls)
        self.sock, self.tls, self.address = sock, False, ""
        self.conn = Connection(server=True, token=token, limits=limits,
                               credentials=credentials, derived_roles=derived_roles)
        self._send_lock = threading.Lock()
        self._closed_here = False
        self._inbox = []
        try:
            sock.settimeout(timeout)
            self._handshake(until=State.ACCEPTING, deadline=time.monotonic() + timeout)
            if self.conn.role not in roles:
                self.write(self.conn.reject(f"role {self.conn.role!r} is not served here"))
                raise AuthenticationError(f"refused a {self.conn.role!r} peer")
            self.write(self.conn.welcome(client_no, info))
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        self._ready()
        return self

    def _handshake(self, until: State = State.OPEN, deadline: float | None = None) -> None:
        while self.conn.state is not until:
            if deadline is not None:  # a total deadline: each read gets only what is left
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionLostError("no completed handshake within its deadline")
                self.sock.settimeout(left)
            try:
                self._inbox.extend(self._read())
            finally:  # a rejection goes out even when the peer failed
                replies = self.conn.data_to_send()
                if replies:
                    with contextlib.suppress(ConnectionLostError):
                        self.write(replies)

    def _ready(self) -> None:
        self.sock.settimeout(None)
        self._poll = select.poll()
        self._poll.register(self.sock, select.POLLIN)

    @property
    def client_no(self) -> int:
        return self.conn.client_no

    @property
    def info(self) -> dict[str, Any]:
        return self.conn.info

    def write(self, pieces: list[Buffer]) -> None:
        with self._send_lock:
            try:
                if len(pieces) == 1:  # a frame without buffers (most are): one send, no views
                    self.sock.sendall(pieces[0])
                    return
                views = [memoryview(p).cast("B") for p in pieces]
                if self.tls:  # TLS sockets have no sendmsg: one record stream per piece
                    for view in views:
                        self.sock.sendall(view)
                    return
                while views:
                    sent = self.sock.sendmsg(views[:512])
                    while sent and views:
                        n = views[0].nbytes
                        if sent >= n:
                            sent -= n
                            views.pop(0)
                        else:
                            views[0] = views[0][sent:]
                            sent = 0
            except OSError as exc:
                raise self._ended(f"connection to the scheduler lost: {exc}") from exc

    def send(self, messages: list[Any]) -> None:
        if messages:
            self.write(self.conn.send(messages))

    def _read(self) -> list[Any]:
        buf = self.conn.get_buffer()
        try:
            n = self.sock.recv_into(buf)
        except OSError as exc:
            if self.tls and isinstance(exc, ssl.SSLError) and not self.conn.is_open():
                raise tls_failure(self.address, exc) from exc  # e.g. a client cert is required
            raise self._ended(f"connection to the scheduler lost: {exc}") from exc
        if n == 0:
            if self.address and not self.conn.server and not self.conn.is_open():
                raise self._ended(closed_in_handshake(self.address, self.tls))
            raise self._ended("the scheduler closed the connection")
        self.conn.buffer_updated(n)
        return self.conn.receive()

    def receive(self, timeout: float | None = None) -> list[Any]:
        """Messages received; blocks until some arrive or `timeout` passes (then [] or the
        messages of a partial read). The socket stays blocking: writers are unaffected."""
        if self._inbox:
            out, self._inbox = self._inbox, []
            return out
        if timeout is not None:
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()  # not polled
            if not pending and not self._poll.poll(max(0.0, timeout) * 1000):
                return []
            return self._read()
        while not (messages := self._read()):
            pass
        return messages

    def _ended(self, why: str) -> ConnectionClosedError | ConnectionLostError:
        if self._closed_here:
            return ConnectionClosedError("this connection was closed by this process")
        return ConnectionLostError(why)

    def close(self) -> None:
        self._closed_here = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        with contextlib.suppress(OSError):
            self.sock.close()
