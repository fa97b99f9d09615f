"""``qsrv gateway``: serve programs and jobs over HTTP for a cluster."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qsrv.cli._common import setup_logging
from qsrv.errors import AuthenticationError, ConfigError, ConnectionLostError
from qsrv.gateway import (
    JOB_SANDBOXES,
    ArchiveLimits,
    GatewayConfig,
    default_data_dir,
    run_gateway,
)
from qsrv.transport import SyncConnection


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway", help="serve programs and jobs over HTTP",
        description="Serve the programs-and-jobs HTTP API. Jobs run as drivers of the cluster "
                    "given by --cluster (or $QSRV_ADDRESS). The gateway holds the cluster's "
                    "token (the one its scheduler was started with, from $QSRV_TOKEN or "
                    "--cluster-token); each job gets a credential derived for it instead, "
                    "valid as a driver only, revoked when the job ends. The gateway checks at "
                    "start that it can reach and authenticate to the cluster, and refuses to "
                    "start otherwise. Jobs run in a sandbox: see --job-sandbox.",
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
    parser.add_argument("--job-sandbox", choices=JOB_SANDBOXES, default="auto",
                        help="how jobs are kept apart: bwrap (Linux namespaces through "
                             "bubblewrap), users (as root: each user's jobs run as the OS "
                             "account of the same name), none (no isolation: one trusted user "
                             "only); auto (default): none while there is one user, bwrap once "
                             "there are more, refusing to serve several users when bubblewrap "
                             "cannot run")
    parser.add_argument("--job-python", default=None, metavar="PATH",
                        help="the interpreter jobs run with (default: the gateway's; with "
                             "--job-sandbox users it must be readable by the accounts)")
    parser.add_argument("--max-jobs-per-user", type=int, default=4,
                        help="running jobs per user; more wait queued (default: %(default)s)")
    parser.add_argument("--max-queued-jobs-per-user", type=int, default=1000,
                        help="queued jobs per user; past it a submit is refused with 429 "
                             "(default: %(default)s)")
    parser.add_argument("--max-stored-mb-per-user", type=float, default=4096.0,
                        help="program archives and files a user may store (default: "
                             "%(default)s)")
    parser.add_argument("--max-programs-per-user", type=int, default=100,
                        help="program titles per user (default: %(default)s)")
    parser.add_argument("--max-versions-per-program", type=int, default=100,
                        help="versions kept of one program (default: %(default)s)")
    parser.add_argument("--login-attempts", type=int, default=5,
                        help="failed password logins of one user before each further "
                             "attempt waits, 1 s doubling up to 5 min (default: %(default)s)")
    parser.add_argument("--login-attempts-per-address", type=int, default=20,
                        help="the same, per client address (default: %(default)s)")
    parser.add_argument("--login-token-hours", type=float, default=24.0,
                        help="how long a token from a password login is valid (default: "
                             "%(default)s)")
    parser.add_argument("--job-credential-hours", type=float, default=168.0,
                        help="the longest a job's cluster credential is valid; it is "
                             "revoked when the job ends (default: %(default)s)")
    parser.add_argument("--max-archive-mb", type=float, default=64.0,
                        help="largest working-directory upload (default: %(default)s)")
    parser.add_argument("--max-log-kb", type=int, default=1024,
                        help="output kept per job (default: %(default)s)")
    parser.add_argument("--stop-grace", type=float, default=5.0,
                        help="seconds between SIGTERM and SIGKILL when stopping a job")
    parser.add_argument("--max-connections-per-address", type=int, default=256,
                        help="open HTTP connections from one client address; one more is "
                             "answered 503 and closed (default: %(default)s)")
    parser.add_argument("--header-timeout", type=float, default=30.0,
                        help="seconds a new connection has to send its first request's head; "
                             "past it, 408 and closed (default: %(default)s)")
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
        job_sandbox=args.job_sandbox,
        job_python=args.job_python or sys.executable,
        max_queued_jobs_per_user=args.max_queued_jobs_per_user,
        max_stored_bytes_per_user=int(args.max_stored_mb_per_user * (1 << 20)),
        max_programs_per_user=args.max_programs_per_user,
        max_versions_per_program=args.max_versions_per_program,
        login_failures_per_user=args.login_attempts,
        login_failures_per_address=args.login_attempts_per_address,
        login_token_ttl_s=args.login_token_hours * 3600.0,
        job_credential_ttl_s=args.job_credential_hours * 3600.0,
        max_connections_per_address=args.max_connections_per_address,
        header_timeout_s=args.header_timeout,
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
