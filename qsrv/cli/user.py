"""``qsrv user``: manage the gateway's users on its database (the gateway need not run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qsrv.gateway import add_user, default_data_dir, list_users
from qsrv.gateway._cli import print_table
from qsrv.gateway._models import isoformat


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("user", help="manage gateway users and tokens")
    sub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a user; its token is the last line printed")
    add.add_argument("name")
    add.set_defaults(func=_add)
    lst = sub.add_parser("list", help="list users")
    lst.set_defaults(func=_list)
    for p in (add, lst):
        p.add_argument("--data-dir", type=Path, default=None,
                       help="the gateway's data directory (default: ~/.qsrv)")


def _add(args: argparse.Namespace) -> int:
    user, token = add_user(args.data_dir or default_data_dir(), args.name)
    print(f"created user {user.name}; its token (shown only now):")
    print(token)
    return 0


def _list(args: argparse.Namespace) -> int:
    users = list_users(args.data_dir or default_data_dir())
    print_table(["NAME", "CREATED"], [[u.name, isoformat(u.created_at)] for u in users])
    return 0
