"""What the gateway's CLI subcommands share: client options and table printing."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from qsrv.gateway import GATEWAY_ENV, GATEWAY_TOKEN_ENV, Client

__all__ = ["add_client_options", "client_from_args", "print_table"]


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", metavar="URL", default=None,
                        help=f"the gateway's URL (default: ${GATEWAY_ENV})")
    parser.add_argument("--token", default=None,
                        help=f"your gateway token (default: ${GATEWAY_TOKEN_ENV})")


def client_from_args(args: argparse.Namespace) -> Client:
    return Client(args.gateway, args.token)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(header), *([("" if c is None else str(c)) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
