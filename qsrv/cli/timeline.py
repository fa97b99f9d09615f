"""`qsrv timeline`: the recent task events of a cluster in Chrome's trace format."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qsrv.cli._common import add_connect_options, connect_args
from qsrv.errors import ConfigError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "timeline", help="write recent task events as a Chrome trace",
        description="Write the task events the scheduler keeps (one per task run: function, "
                    "worker, executor, start, duration) in Chrome's trace format; open the "
                    "file in chrome://tracing or https://ui.perfetto.dev.")
    add_connect_options(p, timeout="the scheduler")
    p.add_argument("--output", "-o", default="-",
                   help="file to write (default: standard output)")
    p.add_argument("--since", default=None,
                   help="only events of the last DURATION (e.g. 60s, 5m, 1h; default: all "
                        "the scheduler keeps)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qsrv.dashboard import parse_since, timeline

    address, token = connect_args(args)
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    trace = timeline(address, token, since, timeout=args.timeout)
    text = json.dumps(trace)
    if args.output == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        tasks = sum(1 for e in trace["traceEvents"] if e.get("ph") == "X")
        print(f"{tasks} task event(s) written to {args.output}", file=sys.stderr)
    return 0
