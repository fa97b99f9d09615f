"""``qsrv batches``: your batches of quantum jobs on a gateway; ``qsrv batches show ID``."""

from __future__ import annotations

import argparse
import json
import sys

from qsrv.cli._gateway_common import add_client_options, client_from_args, print_table
from qsrv.gateway import Batch, BatchFilters, Pagination, QStatus


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "batches", help="your batches of quantum jobs; show one",
        description="Your batches, newest first. 'qsrv batches show ID' lists a batch's jobs.")
    parser.add_argument("--status", action="append", default=None,
                        choices=[s.value for s in QStatus], help="only these (repeatable)")
    parser.add_argument("--open", dest="open", action="store_true", default=None,
                        help="only open batches")
    parser.add_argument("--closed", dest="open", action="store_false",
                        help="only closed batches")
    parser.add_argument("--session", default=None, help="only the batches of this session")
    parser.add_argument("--limit", type=int, default=20, help="at most this many (1-100)")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(parser)
    parser.set_defaults(func=_list)
    sub = parser.add_subparsers(dest="batches_command", metavar="ACTION")
    show = sub.add_parser("show", help="a batch and its jobs, in order")
    show.add_argument("batch_id")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print JSON instead of a table")
    _action_client_options(show)
    show.set_defaults(func=_show)


def _when(batch: Batch) -> str:
    return batch.created_at.isoformat(timespec="seconds") if batch.created_at else ""


def _list(args: argparse.Namespace) -> int:
    filters = BatchFilters(status=args.status, open=args.open, session_id=args.session)
    page = client_from_args(args).get_batches(filters, Pagination(args.offset, args.limit))
    if args.json:
        print(json.dumps({"batches": [b.info for b in page.results], "total": page.total},
                         indent=2))
        return 0
    print_table(["BATCH", "PLATFORM", "STATUS", "OPEN", "JOBS", "PARENT", "CREATED"],
                [[b.id, b.platform, b.status, "yes" if b.open else "no", len(b.ordered_jobs),
                  b.parent_id or "", _when(b)] for b in page.results])
    print(f"{len(page.results)} of {page.total} batches", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    batch = client_from_args(args).get_batch(args.batch_id)
    if args.json:
        print(json.dumps(batch.info, indent=2))
        return 0
    print(f"batch {batch.id}: {batch.status}{', open' if batch.open else ''} on "
          f"{batch.platform} (session {batch.session_id})")
    print_table(["JOB", "STATUS", "SHOTS", "VARIABLES", "ERRORS"],
                [[j.id, j.status, j.shots, json.dumps(j.variables), "; ".join(j.errors)]
                 for j in batch.ordered_jobs])
    return 0


def _action_client_options(parser: argparse.ArgumentParser) -> None:
    """The client options again after the action, without defaults of their own (argparse
    would otherwise overwrite what was given before the action)."""
    parser.add_argument("--gateway", metavar="URL", default=argparse.SUPPRESS,
                        help="the gateway's URL (default: $QSRV_GATEWAY)")
    parser.add_argument("--token", default=argparse.SUPPRESS,
                        help="your gateway token (default: $QSRV_GATEWAY_TOKEN)")
