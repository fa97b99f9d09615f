"""`qsrv scheduler`: run the cluster's scheduler."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from qsrv.cli._common import setup_logging
from qsrv.errors import ConfigError
from qsrv.scheduler import SchedulerServer, install_uvloop
from qsrv.transport import server_context


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "scheduler", help="run the scheduler of a cluster",
        description="Run the scheduler: workers and drivers join it at HOST:PORT with the "
                    "cluster token. Prints the address and the command that joins a worker.")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=7420, help="TCP port (default 7420; 0 = any)")
    p.add_argument("--token", default=None,
                   help="cluster token (default: $QSRV_TOKEN, else a random one is printed)")
    p.add_argument("--heartbeat-timeout", type=float, default=5.0,
                   help="seconds without a heartbeat before a worker is removed (default 5)")
    p.add_argument("--handshake-timeout", type=float, default=10.0,
                   help="seconds a new connection has to authenticate (default 10)")
    p.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    p.add_argument("--tls-ca", default=None,
                   help="also require client certificates signed by this CA")
    p.add_argument("--unix", default=None, metavar="PATH",
                   help="also listen on this Unix socket; clients on this machine join with "
                        "--address unix:PATH")
    p.add_argument("--max-pending", type=int, default=128,
                   help="connections allowed to wait for authentication at once (default 128)")
    p.add_argument("--max-pending-per-address", type=int, default=16, metavar="N",
                   help="of those, from one IP address (default 16): a flood of idle sockets "
                        "from one address takes only its own share, never every client's slots")
    p.add_argument("--log-level", default="warning", help="debug, info, warning (default)")
    p.add_argument("--ready-fd", type=int, default=None, metavar="FD",
                   help="once listening, write one JSON line to this inherited file descriptor "
                        "({\"address\": HOST:PORT, \"unix\": PATH or null}) and close it: "
                        "how a program that starts the scheduler learns where it listens")
    p.add_argument("--exit-with-parent", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    token = args.token if args.token is not None else os.environ.get("QSRV_TOKEN") or None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_ca and not args.tls_cert:
        raise ConfigError("--tls-ca (client certificates) needs --tls-cert and --tls-key")
    for option, value in (("--max-pending", args.max_pending),
                          ("--max-pending-per-address", args.max_pending_per_address)):
        if value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    tls = server_context(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None
    server = SchedulerServer(args.host, args.port, token,
                             heartbeat_timeout=args.heartbeat_timeout,
                             handshake_timeout=args.handshake_timeout,
                             max_pending=args.max_pending,
                             max_pending_per_host=args.max_pending_per_address, ssl=tls,
                             unix=args.unix)
    install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server, args.exit_with_parent, show_token=token is None,
                           ready_fd=args.ready_fd, unix=args.unix))
    return 0


async def _serve(server: SchedulerServer, parent: int, *, show_token: bool,
                 ready_fd: int | None, unix: str | None) -> None:
    address = await server.start()
    if ready_fd is not None:
        with os.fdopen(ready_fd, "w") as ready:
            ready.write(json.dumps({"address": address, "unix": unix}) + "\n")
    print(f"qsrv scheduler listening on {address}", flush=True)
    if show_token:
        print(f"join with: QSRV_TOKEN={server.token} qsrv worker --address {address}",
              flush=True)
    else:
        print(f"join with: qsrv worker --address {address}  (QSRV_TOKEN set to the token)",
              flush=True)
    sys.stdout.flush()
    watcher = asyncio.ensure_future(_exit_with(parent)) if parent else None
    try:
        await server.serve_forever()
    finally:
        if watcher is not None:
            watcher.cancel()
        await server.close()


async def _exit_with(parent: int) -> None:
    while True:
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            raise SystemExit(0)
