"""``qsrv gateway``: serve programs and jobs over HTTP for a cluster."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qsrv.cli._common import setup_logging
from qsrv.errors import AuthenticationError, ConfigError, ConnectionLostError
from qsrv.gateway import ArchiveLimits, GatewayConfig, default_data_dir, run_gateway
from qsrv.transport import SyncConnection


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway", help="serve programs and jobs over HTTP",
        description="Serve the programs-and-jobs HTTP API. Jobs run as drivers of the cluster "
                    "given by --cluster (or $QSRV_ADDRESS), authenticated with the cluster's "
                    "token: the one its scheduler was started with, from $QSRV_TOKEN (or "
                    "--cluster-token). The gateway checks at start that it can reach and "
                    "authenticate to the cluster, and refuses to start otherwise.",
    )
    parser.add_argument("--cluster", metavar="HOST:PORT", default=None,
                        help="the cluster jobs join (default: $QSRV_ADDRESS; none: each job "
                             "starts its own local cluster)")
    parser.add_argument("--cluster-token", default=None,
                        help="the cluster's token (default: $QSRV_TOKEN); prefer the "
                             "variable, command lines are visible to other users")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7421, help="port (default: %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the database and sandboxes live (default: ~/.qsrv)")
    parser.add_argument("--max-jobs-per-user", type=int, default=4,
                        help="running jobs per user; more wait queued (default: %(default)s)")
    parser.add_argument("--max-archive-mb", type=float, default=64.0,
                        help="largest working-directory upload (default: %(default)s)")
    parser.add_argument("--max-log-kb", type=int, default=1024,
                        help="output kept per job (default: %(default)s)")
    parser.add_argument("--stop-grace", type=float, default=5.0,
                        help="seconds between SIGTERM and SIGKILL when stopping a job")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning (default)")
    parser.add_argument("--exit-with-parent", type=int, default=0, help=argparse.SUPPRESS)
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    max_archive = int(args.max_archive_mb * (1 << 20))
    config = GatewayConfig(
        data_dir=args.data_dir or default_data_dir(),
        host=args.host,
        port=args.port,
        cluster_address=args.cluster or os.environ.get("QSRV_ADDRESS") or None,
        cluster_token=args.cluster_token or os.environ.get("QSRV_TOKEN") or None,
        max_jobs_per_user=args.max_jobs_per_user,
        max_log_bytes=args.max_log_kb << 10,
        stop_grace_s=args.stop_grace,
        archive_limits=ArchiveLimits(max_archive_bytes=max_archive,
                                     max_unpacked_bytes=max(4 * max_archive, 256 << 20)),
    )
    if config.cluster_address is not None:
        print(f"qsrv gateway: {_check_cluster(config.cluster_address, config.cluster_token)}",
              flush=True)
    else:
        print("qsrv gateway: no cluster given (--cluster or QSRV_ADDRESS): each job starts a "
              "local cluster of its own", flush=True)
    return run_gateway(config, exit_with_parent=args.exit_with_parent)


def _check_cluster(address: str, token: str | None) -> str:
    """Prove at start that jobs will be able to join the cluster: connect and authenticate as
    a driver would. Raises a ConfigError with the reason (the gateway then does not start)."""
    try:
        SyncConnection(address, token or "", "driver", timeout=10.0).close()
    except AuthenticationError as exc:
        source = "no token was given" if not token else "the token was refused"
        raise ConfigError(
            f"cannot authenticate to the cluster at {address}: {source} ({exc}). Jobs join the "
            f"cluster with its token: set QSRV_TOKEN (or --cluster-token) to the token the "
            f"scheduler was started with") from exc
    except ConnectionLostError as exc:
        raise ConfigError(f"cannot reach the cluster at {address}: {exc}") from exc
    return f"cluster at {address} reached, token accepted"
