"""Running a gateway: in the current event loop (``GatewayServer``), in the foreground for the
CLI (``run_gateway``), or as a child process for the embedded local cluster
(``start_gateway_process``).

A gateway process announces itself with one line on stdout, ``READY_PREFIX + url``, once it
accepts connections; everything else it says goes to stderr (its log).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from qsrv._retry import Deadline, poll_until_async
from qsrv.errors import ConfigError
from qsrv.gateway._config import GatewayConfig
from qsrv.gateway._http import build_app
from qsrv.gateway._http_port import BoundedPort
from qsrv.gateway._service import GatewayService

__all__ = ["READY_PREFIX", "GatewayServer", "run_gateway", "start_gateway_process"]

READY_PREFIX = "qsrv gateway listening on "
_log = logging.getLogger("qsrv.gateway")
_PARENT_POLL_S = 1.0


class GatewayServer:
    """A gateway serving in the running event loop.

    ``url = await server.start()``, later ``await server.close()``; or ``async with``.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.service = GatewayService(config)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port: BoundedPort | None = None  # the HTTP port's per-peer bounds and counts
        self.url = ""

    async def start(self) -> str:
        self.port = BoundedPort(self._handler, per_address=self.config.max_connections_per_address,
                                header_timeout_s=self.config.header_timeout_s)
        await self.service.start()
        try:
            sock = socket.create_server((self.config.host, self.config.port))
        except OSError as exc:
            await self.service.close()
            raise ConfigError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}"
            ) from exc
        host, port = sock.getsockname()[:2]
        self._runner = web.AppRunner(build_app(self.service), access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        self._listener = await asyncio.get_running_loop().create_server(self.port, sock=sock)
        if not ipaddress.ip_address(host).is_loopback:
            _log.warning("the gateway listens on %s: tokens travel in clear over plain HTTP, "
                         "put a TLS proxy in front of it", host)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self.service.gateway_url = self.url  # jobs call back here, even before any request
        return self.url

    def _handler(self) -> asyncio.Protocol:
        """aiohttp's protocol for one admitted connection."""
        assert self._runner is not None and self._runner.server is not None
        return self._runner.server()

    async def close(self) -> None:
        """Stop accepting, end running jobs (FAILED: the gateway stopped), close the store."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.service.close()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def run_gateway(config: GatewayConfig, exit_with_parent: int = 0) -> int:
    """Serve in the foreground until SIGINT or SIGTERM; print the ready line first.

    With ``exit_with_parent`` (a pid), also stop once that process is no longer the parent
    (it died): a local cluster's gateway does not outlive the driver that started it.
    """

    async def serve() -> None:
        server = GatewayServer(config)
        url = await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watcher = (asyncio.create_task(_watch_parent(exit_with_parent, stop))
                   if exit_with_parent else None)
        print(f"{READY_PREFIX}{url}", flush=True)
        try:
            await stop.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
            await server.close()

    asyncio.run(serve())
    return 0


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    await poll_until_async(lambda: os.getppid() != parent, None, _PARENT_POLL_S)
    stop.set()


def start_gateway_process(
    cluster_address: str | None,
    cluster_token: str | None,
    data_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 30.0,
    exit_with_parent: bool = True,
    extra_args: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``qsrv gateway`` as a child process; return it and its URL once it serves.

    The cluster token reaches the child through its environment, never its command line. Stop
    it with ``proc.terminate(); proc.wait()``: it ends its running jobs before exiting. With
    ``exit_with_parent`` it also stops by itself, within a second, if this process dies.
    The child writes nothing more on its stdout after the ready line; its log goes to stderr.
    """
    cmd = [sys.executable, "-m", "qsrv", "gateway", "--data-dir", str(Path(data_dir)),
           "--host", host, "--port", str(port), *extra_args]
    if exit_with_parent:
        cmd += ["--exit-with-parent", str(os.getpid())]
    env = dict(os.environ)
    env.pop("QSRV_ADDRESS", None)
    env.pop("QSRV_TOKEN", None)
    if cluster_address:
        cmd += ["--cluster", cluster_address]
    if cluster_token:
        env["QSRV_TOKEN"] = cluster_token
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    try:
        line = _read_line(proc, startup_timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, line[len(READY_PREFIX):]


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The child's ready line (lines before it, such as its cluster check, are skipped), read
    without blocking past ``timeout``."""
    assert proc.stdout is not None
    deadline = Deadline(timeout)
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith(READY_PREFIX):
                    return line
            left = deadline.remaining()
            if left <= 0:
                raise ConfigError(f"the gateway did not start within {timeout} s")
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                code = proc.wait()
                raise ConfigError(f"the gateway exited with code {code} before serving")
            buffer += chunk
