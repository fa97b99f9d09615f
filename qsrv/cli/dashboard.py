"""`qsrv dashboard`: live pages of a cluster, its Prometheus metrics, in a browser."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from qsrv.cli._common import add_connect_options, connect_args


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "dashboard", help="serve live pages of a cluster (and /metrics)",
        description="Follow the scheduler as a read-only monitor and serve its live pages: "
                    "workers, tasks, the task stream, failures; /metrics for Prometheus. "
                    "Prints a URL carrying a one-time login token.")
    add_connect_options(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs --certfile)")
    p.add_argument("--port", type=int, default=7423, help="port to bind (default 7423)")
    p.add_argument("--certfile", default=None, help="TLS certificate of the pages")
    p.add_argument("--keyfile", default=None, help="TLS key of the pages")
    p.add_argument("--interval", type=float, default=0.5,
                   help="seconds between live updates (default 0.5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qsrv.dashboard import DashboardServer

    address, token = connect_args(args)
    server = DashboardServer(address, token, host=args.host, port=args.port,
                             certfile=args.certfile, keyfile=args.keyfile,
                             interval=max(0.1, args.interval))

    async def serve() -> None:
        url = await server.start()
        print(f"qsrv dashboard of {address}: {url}", flush=True)
        print("(the token in this URL logs in once; the cluster token also logs in)",
              file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.close()

    asyncio.run(serve())
    return 0
