"""A gateway in this process, for tests that use the synchronous client as users do."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from qsrv.gateway import GatewayConfig, GatewayServer


class ThreadedGateway:
    """A GatewayServer on 127.0.0.1:0 served by an event loop in a daemon thread."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GatewayServer(config)
        self.url = self.call(self.server.start())

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run ``coro`` on the gateway's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
