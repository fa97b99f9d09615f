"""Options shared by the subcommands that join a cluster."""

from __future__ import annotations

import argparse
import logging
import os

from qsrv.errors import ConfigError
from qsrv.transport import ENV_CA, ENV_CERT, ENV_KEY


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="scheduler HOST:PORT to join (default: $QSRV_ADDRESS)")
    parser.add_argument("--token", default=None,
                        help="cluster token (default: $QSRV_TOKEN); prefer the variable, "
                             "command lines are visible to other users")


def add_client_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-ca", default=None,
                        help="CA file to verify a TLS scheduler (default: $QSRV_TLS_CA)")
    parser.add_argument("--tls-cert", default=None,
                        help="client certificate, when the scheduler requires one "
                             "(default: $QSRV_TLS_CERT)")
    parser.add_argument("--tls-key", default=None,
                        help="key of the client certificate (default: $QSRV_TLS_KEY)")


def apply_client_tls(args: argparse.Namespace) -> None:
    """Make the TLS options visible to this process and its children (executors)."""
    for option, env in (("tls_ca", ENV_CA), ("tls_cert", ENV_CERT), ("tls_key", ENV_KEY)):
        value = getattr(args, option, None)
        if value:
            os.environ[env] = os.path.abspath(value)


def cluster_of(args: argparse.Namespace) -> tuple[str, str]:
    address = args.address or os.environ.get("QSRV_ADDRESS")
    if not address:
        raise ConfigError("no scheduler address: pass --address HOST:PORT or set QSRV_ADDRESS")
    token = args.token if args.token is not None else os.environ.get("QSRV_TOKEN", "")
    return address, token


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
