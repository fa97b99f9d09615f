"""``qsrv stop``: stop the local cluster of ``qsrv start``."""

from __future__ import annotations

import argparse
from typing import Any

from qsrv._local_cluster import stop_background


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "stop", help="stop the local cluster of `qsrv start`",
        description="Stop this user's background cluster (`qsrv start`): the worker first, "
                    "which stops its executors and removes its object store, then the "
                    "scheduler; then remove its directory (socket, token, log). Scripts "
                    "connected to it lose their connection. Nothing running is not an error.")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds each process has to stop before it is killed (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stopped = stop_background(args.grace)
    if stopped is None:
        print("qsrv: no local cluster was running")
    else:
        print(f"qsrv: stopped the local cluster at {stopped.address} (scheduler pid "
              f"{stopped.scheduler_pid}, worker pid {stopped.worker_pid})")
    return 0
