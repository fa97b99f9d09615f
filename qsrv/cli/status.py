"""`qsrv status`: workers, their resources, and task counts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from qsrv.cli._common import add_cluster_options, cluster_of
from qsrv.protocol import StatusReply, StatusRequest
from qsrv.transport import SyncConnection


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "status", help="show workers, resources and tasks of a cluster",
        description="Show each worker's total and free resources and executors, and the "
                    "numbers of running, queued, waiting and infeasible tasks.")
    add_cluster_options(p)
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.set_defaults(func=run)


def fetch_status(address: str, token: str, timeout: float = 10.0) -> dict[str, Any]:
    conn = SyncConnection(address, token, "driver", timeout=timeout)
    try:
        conn.send([StatusRequest(1)])
        while True:
            for msg in conn.receive(timeout):
                if isinstance(msg, StatusReply):
                    return msg.status
    finally:
        conn.close()


def render(status: dict[str, Any]) -> str:
    lines = [f"{len(status['workers'])} worker(s), {status['clients']} driver(s), "
             f"{status['objects']} object(s)"]
    for w in status["workers"]:
        total = ", ".join(f"{k}={v}" for k, v in w["total"].items())
        free = ", ".join(f"{k}={v}" for k, v in w["free"].items())
        gpus = f" gpus={','.join(w['gpu_ids'])}" if w["gpu_ids"] else ""
        lines.append(f"  worker {w['id']} {w['name']}: total {{{total}}} free {{{free}}}"
                     f"{gpus} executors={w['executors']} running={w['running']}")
    t = status["tasks"]
    lines.append(f"tasks: running={t['running']} queued={t['queued']} "
                 f"waiting={t['waiting']} infeasible={t['infeasible']}")
    for item in status["infeasible"]:
        lines.append(f"  infeasible x{item['count']}: {item['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    address, token = cluster_of(args)
    status = fetch_status(address, token)
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0
