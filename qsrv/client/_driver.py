"""The driver's connection: an IO thread with its own event loop, shared by every user thread.

User threads put messages into the `ClientCore` outbox and ask for one flush; the IO thread
sends each batch as one frame and delivers arriving values to the core, which wakes waiters.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

from qsrv.client._core import ClientCore
from qsrv.errors import AuthenticationError, ConnectionClosedError, GetTimeoutError
from qsrv.protocol import Connection, Notice, ObjectValue, StatusReply, StatusRequest
from qsrv.transport import FramedProtocol, parse_address

log = logging.getLogger("qsrv")
_DROP_FLUSH_INTERVAL = 0.1
_PROGRESS_AFTER = 10.0


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - Windows
        return asyncio.new_event_loop()


class Driver:
    core: ClientCore

    def __init__(self, address: str, token: str, *, connect_timeout: float = 10.0) -> None:
        self.address = address
        self.loop = new_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="qsrv-io",
                                        daemon=True)
        self._thread.start()
        self._scheduled = False
        self._replies: dict[int, Future[dict[str, Any]]] = {}
        self._req_ids = itertools.count(1)
        self.proto: FramedProtocol | None = None
        self._opened: Future[None] = Future()
        try:
            asyncio.run_coroutine_threadsafe(self._connect(address, token),
                                             self.loop).result(connect_timeout)
            self._opened.result(connect_timeout)
        except BaseException:
            self._stop_loop()
            raise
        assert self.proto is not None
        self.core = ClientCore(self.proto.conn.client_no, self.flush_soon, self._block)
        self.loop.call_soon_threadsafe(self._drop_flusher)

    # ---- IO thread ---------------------------------------------------------------------------
    async def _connect(self, address: str, token: str) -> None:
        host, port = parse_address(address)
        conn = Connection(server=False, token=token, role="driver")
        try:
            _, self.proto = await self.loop.create_connection(
                lambda: FramedProtocol(conn, on_messages=self._on_messages,
                                       on_close=self._on_close, on_open=self._on_open),
                host, port)
        except OSError as exc:
            raise ConnectionClosedError(f"cannot reach the scheduler at {address}: {exc}") from exc

    def _on_open(self, proto: FramedProtocol) -> None:
        if not self._opened.done():
            self._opened.set_result(None)

    def _on_messages(self, proto: FramedProtocol, messages: list[Any]) -> None:
        core = self.core
        for msg in messages:
            if type(msg) is ObjectValue:
                core.on_value(msg)
            elif type(msg) is Notice:
                log.warning("%s", msg.text)
            elif type(msg) is StatusReply:
                fut = self._replies.pop(msg.req_id, None)
                if fut is not None:
                    fut.set_result(msg.status)

    def _on_close(self, proto: FramedProtocol, reason: str) -> None:
        exc: Exception = ConnectionClosedError(
            f"connection to the scheduler at {self.address} closed: {reason}")
        if isinstance(proto.error, AuthenticationError):
            exc = proto.error
        if not self._opened.done():
            self._opened.set_exception(exc)
            return
        self.core.on_closed(exc)
        for fut in self._replies.values():
            fut.set_exception(exc)
        self._replies.clear()

    def _flush(self) -> None:
        self._scheduled = False
        if self.proto is not None:
            self.proto.send_many(self.core.take_outbox())
            self.proto.flush()

    def _drop_flusher(self) -> None:
        if self.core.dropped:
            self._flush()
        self.loop.call_later(_DROP_FLUSH_INTERVAL, self._drop_flusher)

    # ---- user threads ------------------------------------------------------------------------
    def flush_soon(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon_threadsafe(self._flush)

    def _block(self, done: threading.Event, timeout: float | None) -> bool:
        if timeout is not None or not sys.stderr.isatty():
            return done.wait(timeout)
        start = time.monotonic()
        while not done.wait(_PROGRESS_AFTER):
            print(f"qsrv: still waiting for results ({time.monotonic() - start:.0f} s)",
                  file=sys.stderr)
        return True

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        req_id = next(self._req_ids)
        fut: Future[dict[str, Any]] = Future()
        self._replies[req_id] = fut

        def send() -> None:
            if self.proto is None or self.proto.closed:
                fut.set_exception(ConnectionClosedError("not connected"))
            else:
                self.proto.send(StatusRequest(req_id))

        self.loop.call_soon_threadsafe(send)
        try:
            return fut.result(timeout)
        except TimeoutError:
            raise GetTimeoutError(f"no status reply within {timeout:g} s") from None

    def close(self) -> None:
        def shut() -> None:
            if self.proto is not None:
                self._flush()
                self.proto.close("")

        if self.loop.is_running():
            self.loop.call_soon_threadsafe(shut)
        self._stop_loop()
        if self.core.closed is None:
            self.core.on_closed(ConnectionClosedError("qsrv.shutdown() was called"))

    def _stop_loop(self) -> None:
        def stop() -> None:
            self.loop.call_later(0.05, self.loop.stop)

        if self.loop.is_running():
            self.loop.call_soon_threadsafe(stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()
