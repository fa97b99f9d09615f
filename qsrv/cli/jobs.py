"""``qsrv jobs``: run jobs and read their status, logs and results on a gateway."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qsrv.cli._gateway_common import add_client_options, client_from_args, print_table
from qsrv.errors import ConfigError
from qsrv.gateway import JobStatus


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("jobs", help="run jobs; read status, logs, results")
    sub = parser.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    lst = sub.add_parser("list", help="your jobs, newest first")
    lst.add_argument("--limit", type=int, default=20)
    lst.add_argument("--offset", type=int, default=0)
    lst.add_argument("--status", action="append", default=None,
                     choices=[s.value for s in JobStatus], help="only these (repeatable)")
    lst.set_defaults(func=_list)
    run = sub.add_parser("run", help="run a program; prints the job id")
    run.add_argument("title")
    run.add_argument("--arguments", default="{}", help="JSON object given to get_arguments()")
    run.add_argument("--version", type=int, default=None)
    run.set_defaults(func=_run)
    parsers = [lst, run]
    for name, func, text in (("status", _status, "a job's status"),
                             ("logs", _logs, "a job's output so far"),
                             ("result", _result, "wait for a job; print its result"),
                             ("stop", _stop, "stop a job")):
        p = sub.add_parser(name, help=text)
        p.add_argument("job_id")
        p.set_defaults(func=func)
        parsers.append(p)
        if name == "result":
            p.add_argument("--timeout", type=float, default=None)
    for p in parsers:
        add_client_options(p)


def _list(args: argparse.Namespace) -> int:
    page = client_from_args(args).jobs(limit=args.limit, offset=args.offset, status=args.status)
    print_table(["JOB", "PROGRAM", "VERSION", "STATUS", "CREATED"],
                [[j.job_id, j.info["program"], j.info["version"], j.info["status"],
                  j.info["created_at"]] for j in page])
    print(f"{len(page)} of {page.total} jobs", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.arguments)
    except ValueError as exc:
        raise ConfigError(f"--arguments is not JSON: {exc}") from None
    job = client_from_args(args).run(args.title, arguments, version=args.version)
    print(job.job_id)
    return 0


def _status(args: argparse.Namespace) -> int:
    job = client_from_args(args).job(args.job_id)
    print(job.info["status"])
    if job.info.get("error"):
        print(job.info["error"], file=sys.stderr)
    return 0


def _logs(args: argparse.Namespace) -> int:
    sys.stdout.write(client_from_args(args).job(args.job_id).logs())
    return 0


def _result(args: argparse.Namespace) -> int:
    result = client_from_args(args).job(args.job_id).result(timeout=args.timeout)
    print(_render(result))
    return 0


def _stop(args: argparse.Namespace) -> int:
    print(client_from_args(args).job(args.job_id).stop())
    return 0


def _render(value: Any) -> str:
    try:
        return json.dumps(value, indent=2)
    except (TypeError, ValueError):
        return repr(value)
