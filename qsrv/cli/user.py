"""``qsrv user``: manage the gateway's users on its database (the gateway need not run)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from qsrv.cli._gateway_common import print_table
from qsrv.errors import ConfigError
from qsrv.gateway import add_user, default_data_dir, isoformat, list_users, set_password


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("user", help="manage gateway users and tokens")
    sub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a user; its token is the last line printed")
    add.add_argument("name")
    add.set_defaults(func=_add)
    lst = sub.add_parser("list", help="list users")
    lst.set_defaults(func=_list)
    passwd = sub.add_parser("passwd", help="set a user's password (for username/password "
                                           "logins of Quantum Serverless clients)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input instead of prompting "
                             "(the default when standard input is not a terminal)")
    passwd.set_defaults(func=_passwd)
    for p in (add, lst, passwd):
        p.add_argument("--data-dir", type=Path, default=None,
                       help="the gateway's data directory (default: ~/.qsrv)")


def _add(args: argparse.Namespace) -> int:
    user, token = add_user(args.data_dir or default_data_dir(), args.name)
    print(f"created user {user.name}; its token (shown only now):")
    print(token)
    return 0


def _passwd(args: argparse.Namespace) -> int:
    if args.password_stdin or not sys.stdin.isatty():  # piped: read it, never prompt
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise ConfigError("no password on standard input; nothing changed")
    else:
        password = getpass.getpass(f"new password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ; nothing changed")
    set_password(args.data_dir or default_data_dir(), args.name, password)
    print(f"password of {args.name} set")
    return 0


def _list(args: argparse.Namespace) -> int:
    users = list_users(args.data_dir or default_data_dir())
    print_table(["NAME", "CREATED"], [[u.name, isoformat(u.created_at)] for u in users])
    return 0
