"""Running a dashboard: its own HTTP server (``qsrv dashboard``, ``qsrv.init(dashboard=True)``).

It binds loopback unless told otherwise; any other address needs TLS (``certfile`` and
``keyfile``), since a login token and session cookies travel over it. At start it makes a
one-time login token and prints (returns) the URL that carries it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import ssl
import threading
from typing import Any

from aiohttp import web

from qsrv.dashboard._app import dashboard_app
from qsrv.dashboard._source import Feed
from qsrv.errors import ConfigError

__all__ = ["DashboardServer", "is_loopback"]

DEFAULT_PORT = 7423


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardServer:
    """A dashboard following the scheduler at ``address`` with the cluster ``token``."""

    def __init__(self, address: str, token: str, *, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, certfile: str | None = None,
                 keyfile: str | None = None, interval: float = 0.5) -> None:
        if not is_loopback(host) and not certfile:
            raise ConfigError(
                f"refusing to serve the dashboard on {host} without TLS: its login token and "
                "cookies would travel in clear. Bind 127.0.0.1, pass --certfile/--keyfile, or "
                "reach it through the gateway (/dashboard).")
        self.address = address
        self.host, self.port = host, port
        self._ssl: ssl.SSLContext | None = None
        if certfile:
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ssl.load_cert_chain(certfile, keyfile)
        self.login_token = secrets.token_urlsafe(24)
        self.feed = Feed(address, token, interval=interval)
        self.app = dashboard_app(self.feed, cluster_token=token, login_token=self.login_token,
                                 own_feed=True)
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        """The address of the pages, without a token."""
        scheme = "https" if self._ssl else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    @property
    def login_url(self) -> str:
        """The URL that logs in once (what is printed at start)."""
        return f"{self.url}?token={self.login_token}"

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl,
                           reuse_address=True)
        await site.start()
        server: Any = site._server  # the port bound when 0 was asked
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        return self.login_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- in a thread of its own (qsrv.init(dashboard=True)) -------------------------------
    def start_in_thread(self, timeout: float = 30.0) -> str:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.close())
                loop.close()

        self._thread = threading.Thread(target=run, name="qsrv-dashboard", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise ConfigError(f"the dashboard did not start within {timeout:g} s")
        if failure:
            raise failure[0]
        return self.login_url

    def stop_thread(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
