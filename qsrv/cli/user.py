"""``qsrv user``: manage the gateway's users on its database (the gateway need not run)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

from qsrv.cli._gateway_common import print_table
from qsrv.errors import ConfigError
from qsrv.gateway import (
    add_user,
    default_data_dir,
    isoformat,
    list_tokens,
    parse_duration,
    revoke_tokens,
    set_password,
    user_token,
    users_overview,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("user", help="manage gateway users and tokens")
    sub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="create a user; its token is the last line printed")
    add.add_argument("name")
    add.add_argument("--expires", metavar="DURATION", default=None,
                     help="the token expires after this long: 30d, 12h, 90m (default: never)")
    add.set_defaults(func=_add)
    token = sub.add_parser("token", help="another token for a user; printed last")
    token.add_argument("name")
    token.add_argument("--expires", metavar="DURATION", default=None,
                       help="the token expires after this long: 30d, 12h, 90m (default: never)")
    token.set_defaults(func=_token)
    tokens = sub.add_parser("tokens", help="list a user's tokens (ids, never the tokens)")
    tokens.add_argument("name")
    tokens.set_defaults(func=_tokens)
    revoke = sub.add_parser("revoke", help="revoke a user's token (by id), or all of them")
    revoke.add_argument("name")
    revoke.add_argument("token_id", nargs="?", type=int, default=None,
                        help="the token's id from 'qsrv user tokens' (default: every token)")
    revoke.set_defaults(func=_revoke)
    lst = sub.add_parser("list", help="list users, what they hold, and the gateway's quotas")
    lst.set_defaults(func=_list)
    passwd = sub.add_parser("passwd", help="set a user's password (for username/password "
                                           "logins of Quantum Serverless clients)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input instead of prompting "
                             "(the default when standard input is not a terminal)")
    passwd.set_defaults(func=_passwd)
    for p in (add, token, tokens, revoke, lst, passwd):
        p.add_argument("--data-dir", type=Path, default=None,
                       help="the gateway's data directory (default: ~/.qsrv)")


def _expires(args: argparse.Namespace) -> float | None:
    return None if args.expires is None else parse_duration(args.expires)


def _add(args: argparse.Namespace) -> int:
    user, token = add_user(args.data_dir or default_data_dir(), args.name,
                           expires_in=_expires(args))
    print(f"created user {user.name}; its token (shown only now):")
    print(token)
    return 0


def _token(args: argparse.Namespace) -> int:
    token = user_token(args.data_dir or default_data_dir(), args.name,
                       expires_in=_expires(args))
    print(f"a new token of {args.name} (shown only now):")
    print(token)
    return 0


def _tokens(args: argparse.Namespace) -> int:
    now = time.time()
    rows = [[t.token_id, t.kind, t.state(now), isoformat(t.created_at),
             isoformat(t.expires_at) or "never", t.hash_prefix]
            for t in list_tokens(args.data_dir or default_data_dir(), args.name)]
    print_table(["ID", "KIND", "STATE", "CREATED", "EXPIRES", "SHA256"], rows)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    count = revoke_tokens(args.data_dir or default_data_dir(), args.name, args.token_id)
    which = f"token {args.token_id}" if args.token_id is not None else "every token"
    print(f"revoked {which} of {args.name} ({count} valid token{'s' * (count != 1)})")
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


def _of(held: int, quota: int | None) -> str:
    return f"{held}" if quota is None else f"{held}/{quota}"


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f}"


def _list(args: argparse.Namespace) -> int:
    rows, quotas = users_overview(args.data_dir or default_data_dir())
    stored = quotas.get("stored_bytes")
    print_table(
        ["NAME", "CREATED", "TOKENS", "QUEUED", "PROGRAMS", "VERSIONS", "ARCHIVES MB"],
        [[u.name, isoformat(u.created_at), valid, _of(use.queued_jobs, quotas.get("queued_jobs")),
          _of(use.programs, quotas.get("programs")), use.versions,
          _mb(use.archive_bytes) + (f"/{_mb(stored)}" if stored else "")]
         for u, use, valid in rows])
    if quotas:
        print(f"quotas per user: {quotas.get('queued_jobs')} queued jobs, "
              f"{quotas.get('running_jobs')} running, {quotas.get('programs')} programs of "
              f"{quotas.get('versions_per_program')} versions, "
              f"{_mb(int(stored or 0))} MB stored (archives and files)")
    else:
        print("quotas: not known yet (the gateway has not run on this data directory)")
    return 0
