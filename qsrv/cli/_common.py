"""Options shared by the subcommands that join a cluster."""

from __future__ import annotations

import argparse
import logging
import os

from qsrv.errors import ConfigError


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="scheduler HOST:PORT to join (default: $QSRV_ADDRESS)")
    parser.add_argument("--token", default=None,
                        help="cluster token (default: $QSRV_TOKEN); prefer the variable, "
                             "command lines are visible to other users")


def cluster_of(args: argparse.Namespace) -> tuple[str, str]:
    address = args.address or os.environ.get("QSRV_ADDRESS")
    if not address:
        raise ConfigError("no scheduler address: pass --address HOST:PORT or set QSRV_ADDRESS")
    token = args.token if args.token is not None else os.environ.get("QSRV_TOKEN", "")
    return address, token


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
