"""``qsrv programs``: list and upload programs on a gateway."""

from __future__ import annotations

import argparse
import json

from qsrv.cli._gateway_common import add_client_options, client_from_args, print_table
from qsrv.gateway import Program


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("programs", help="list and upload programs")
    sub = parser.add_subparsers(dest="programs_command", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="your programs (latest version of each)")
    lst.set_defaults(func=_list)
    up = sub.add_parser("upload", help="upload a program (same title: a new version)")
    up.add_argument("title")
    up.add_argument("--entrypoint", required=True, help="Python file inside the working dir")
    up.add_argument("--working-dir", default=".", help="directory to upload (default: .)")
    up.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment variable of the job (repeatable)")
    up.add_argument("--description", default="")
    up.set_defaults(func=_upload)
    for p in (lst, up):
        add_client_options(p)


def _list(args: argparse.Namespace) -> int:
    programs = client_from_args(args).programs()
    print_table(["TITLE", "VERSION", "ENTRYPOINT", "CREATED", "DESCRIPTION"],
                [[p.title, p.version, p.entrypoint, p.created_at, p.description]
                 for p in programs])
    return 0


def _upload(args: argparse.Namespace) -> int:
    env = dict(item.partition("=")[::2] for item in args.env)
    info = client_from_args(args).upload(Program(
        title=args.title, entrypoint=args.entrypoint, working_dir=args.working_dir,
        env_vars=env or None, description=args.description,
    ))
    print(json.dumps({"title": info.title, "version": info.version}))
    return 0
