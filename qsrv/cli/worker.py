"""`qsrv worker`: run a worker agent on this node."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from qsrv._resources import parse_resource_list
from qsrv.cli._common import (
    add_client_tls_options,
    add_cluster_options,
    apply_client_tls,
    cluster_of,
    setup_logging,
)
from qsrv.errors import ConfigError
from qsrv.store import MAX_WAITING, MAX_WAITING_PER_HOST
from qsrv.worker import WorkerAgent, WorkerConfig


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "worker", help="run a worker agent on this node",
        description="Join a cluster as a worker agent offering this node's resources. "
                    "Undetected amounts default to what the machine has.")
    add_cluster_options(p)
    add_client_tls_options(p)
    p.add_argument("--cpus", type=float, default=None, help="CPUs to offer (default: all cores)")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs to offer (default: the NVIDIA GPUs detected)")
    p.add_argument("--memory", default=None,
                   help="memory to offer, e.g. 8GB or 16GiB (default: the machine's)")
    p.add_argument("--resources", default="",
                   help="custom resources, e.g. qpu=1,aer=1 (fractions allowed)")
    p.add_argument("--name", default="", help="name shown by `qsrv status` (default host:pid)")
    p.add_argument("--executors", type=int, default=1,
                   help="executor processes started with the agent, while it registers "
                        "(default 1; 0: none until a task needs one). More start when the "
                        "scheduler has a task that fits here and no executor is idle")
    p.add_argument("--heartbeat-interval", type=float, default=1.0,
                   help="seconds between heartbeats (default 1)")
    p.add_argument("--reconnect-timeout", type=float, default=60.0,
                   help="seconds to keep trying to reach the scheduler after losing it, with "
                        "jittered back-off (default 60; 0: exit when it goes away). A refused "
                        "token is never retried: the worker exits with the reason")
    p.add_argument("--connect-timeout", type=float, default=None,
                   help="seconds to keep trying to reach the scheduler at start (default: "
                        "--reconnect-timeout)")
    p.add_argument("--object-store-memory", default=None,
                   help="capacity of this node's shared-memory object store, e.g. 8GB "
                        "(default: 30%% of --memory, at most what /dev/shm holds); pages are "
                        "reserved as the store fills and kept")
    p.add_argument("--spill-dir", default=None,
                   help="where a full store spills objects (default: the temp directory)")
    p.add_argument("--store-host", default="127.0.0.1",
                   help="address other nodes pull this node's objects from (default loopback; "
                        "give this node's address on a multi-node cluster)")
    p.add_argument("--max-pending", type=int, default=MAX_WAITING, metavar="N",
                   help="connections allowed to wait for authentication at once on each of "
                        f"the node store's ports, local and transfer (default {MAX_WAITING})")
    p.add_argument("--max-pending-per-address", type=int, default=MAX_WAITING_PER_HOST,
                   metavar="N",
                   help="of those, from one IP address on the transfer port (default "
                        f"{MAX_WAITING_PER_HOST}): a flood of slow sockets from one address "
                        "takes only its own share")
    p.add_argument("--log-level", default="warning", help="debug, info, warning (default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.executors < 0:
        raise ConfigError(f"--executors must be >= 0, got {args.executors}")
    for option, value in (("--max-pending", args.max_pending),
                          ("--max-pending-per-address", args.max_pending_per_address)):
        if value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    setup_logging(args.log_level)
    apply_client_tls(args)
    address, token = cluster_of(args)
    config = WorkerConfig(address=address, token=token, cpus=args.cpus, gpus=args.gpus,
                          memory=args.memory, resources=parse_resource_list(args.resources),
                          name=args.name, heartbeat_interval=args.heartbeat_interval,
                          executors=args.executors, reconnect_timeout=args.reconnect_timeout,
                          connect_timeout=args.connect_timeout,
                          object_store_memory=args.object_store_memory,
                          spill_dir=args.spill_dir, store_host=args.store_host,
                          max_pending=args.max_pending,
                          max_pending_per_address=args.max_pending_per_address)
    # The agent is off the per-task path: the standard event loop serves it, and an agent
    # starts faster and smaller without uvloop (and without the scheduler's modules).

    async def main() -> None:
        await WorkerAgent(config).run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
