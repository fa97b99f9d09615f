"""The gateway's HTTP port, bounded per peer: at most ``per_address`` open connections from one
address (one more is answered ``503`` and closed), and a connection must have sent its first
request's head within ``header_timeout_s`` (else ``408`` and closed), so that slow or idle
sockets from one place cannot hold the port's file descriptors.

Each connection's protocol is aiohttp's request handler, wrapped: the wrapper counts, times and
passes every event on; aiohttp parses and serves as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from qsrv.errors import ConfigError

__all__ = ["BoundedPort"]

_log = logging.getLogger("qsrv.gateway")
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")  # the parser takes bare line feeds too


def _plain(status: str, text: str) -> bytes:
    body = text.encode() + b"\n"
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class BoundedPort:
    """A protocol factory for ``loop.create_server``: ``handler_factory`` (aiohttp's
    ``web.Server``) makes the protocol that serves each admitted connection."""

    def __init__(self, handler_factory: Callable[[], asyncio.Protocol], *, per_address: int,
                 header_timeout_s: float) -> None:
        if per_address < 1:
            raise ConfigError(f"max_connections_per_address must be at least 1, "
                              f"not {per_address}")
        if not header_timeout_s > 0:
            raise ConfigError(f"header_timeout_s must be above 0, not {header_timeout_s}")
        self._factory = handler_factory
        self.per_address = per_address
        self.header_timeout_s = header_timeout_s
        self.open: Counter[str] = Counter()  # peer address -> its open connections
        self.refused = 0  # connections answered 503 for being over their address's share
        self.timed_out = 0  # connections answered 408 for a head not sent in time

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)


class _Connection(asyncio.Protocol):
    def __init__(self, port: BoundedPort) -> None:
        self._port = port
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._host = ""
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""  # the last bytes read while the first head is incomplete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        port = self._port
        if port.open[self._host] >= port.per_address:
            port.refused += 1
            if port.refused == 1 or port.refused % 1000 == 0:
                _log.warning("%s has %d connections open to the gateway: further ones are "
                             "refused (%d so far)", self._host or "a peer", port.per_address,
                             port.refused)
            transport.write(_plain("503 Service Unavailable",
                                   f"too many connections from {self._host or 'your address'} "
                                   f"(at most {port.per_address}): reuse or close some"))
            transport.close()
            return
        port.open[self._host] += 1
        self._timer = asyncio.get_running_loop().call_later(port.header_timeout_s,
                                                            self._head_too_slow)
        self._inner = port._factory()
        self._inner.connection_made(transport)

    def _head_too_slow(self) -> None:
        self._timer = None
        self._port.timed_out += 1
        _log.info("a connection from %s sent no complete request head in %g s: closed",
                  self._host, self._port.header_timeout_s)
        assert self._transport is not None
        self._transport.write(_plain(
            "408 Request Timeout",
            f"no complete request head within {self._port.header_timeout_s:g} s"))
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: its close is under way
        if self._timer is not None:
            seen = self._tail + data
            if any(end in seen for end in _HEAD_ENDS):
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is None:
            return
        open_ = self._port.open
        open_[self._host] -= 1
        if open_[self._host] <= 0:
            del open_[self._host]
        self._inner.connection_lost(exc)
