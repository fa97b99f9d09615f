"""``qsrv sessions``: your quantum sessions on a gateway; ``qsrv sessions terminate ID``."""

from __future__ import annotations

import argparse
import json
import sys

from qsrv.cli._gateway_common import add_client_options, client_from_args, print_table
from qsrv.gateway import Session, SessionStatus


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sessions", help="your quantum sessions; terminate one",
        description="Your quantum sessions, newest first (a batch's own session is not "
                    "listed). 'qsrv sessions terminate ID' ends one now.")
    parser.add_argument("--status", action="append", default=None,
                        choices=[s.value for s in SessionStatus],
                        help="only sessions in this status (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(parser)
    parser.set_defaults(func=_list)
    sub = parser.add_subparsers(dest="sessions_command", metavar="ACTION")
    terminate = sub.add_parser("terminate", help="end a session now (reason: terminated)",
                               description="End a session now: its pending jobs are cancelled, "
                                           "a running job's task is cancelled (the session is "
                                           "'stopping' meanwhile) and its reservation released. "
                                           "Waits until it is stopped unless --no-wait.")
    terminate.add_argument("session_id")
    terminate.add_argument("--no-wait", action="store_true",
                           help="return at once (the session may still be 'stopping')")
    _action_client_options(terminate)
    terminate.set_defaults(func=_terminate)


def _row(s: Session) -> list[object]:
    return [s.id, s.platform, s.status, s.deduplication_id or "", s.name,
            s.created_at.isoformat(timespec="seconds") if s.created_at else "",
            s.reason or ""]


def _list(args: argparse.Namespace) -> int:
    sessions = client_from_args(args).sessions(status=args.status)
    if args.json:
        print(json.dumps([s.info for s in sessions], indent=2))
        return 0
    print_table(["SESSION", "PLATFORM", "STATUS", "DEDUPLICATION ID", "NAME", "CREATED",
                 "REASON"], [_row(s) for s in sessions])
    print(f"{len(sessions)} sessions", file=sys.stderr)
    return 0


def _terminate(args: argparse.Namespace) -> int:
    session = client_from_args(args).get_session(args.session_id).terminate(
        wait=not args.no_wait)
    print(f"{session.id} {session.status} ({session.reason})")
    return 0


def _action_client_options(parser: argparse.ArgumentParser) -> None:
    """The client options again after the action, without defaults of their own (argparse
    would otherwise overwrite what was given before the action)."""
    parser.add_argument("--gateway", metavar="URL", default=argparse.SUPPRESS,
                        help="the gateway's URL (default: $QSRV_GATEWAY)")
    parser.add_argument("--token", default=argparse.SUPPRESS,
                        help="your gateway token (default: $QSRV_GATEWAY_TOKEN)")
