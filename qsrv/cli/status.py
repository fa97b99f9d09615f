"""`qsrv status`: workers, their resources, and task counts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from qsrv._resources import format_bytes
from qsrv._retry import Deadline
from qsrv.cli._common import add_connect_options, connect_args
from qsrv.errors import GetTimeoutError
from qsrv.protocol import StatusReply, StatusRequest
from qsrv.transport import SyncConnection


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "status", help="show workers, resources and tasks of a cluster",
        description="Show each worker's total and free resources and executors, the "
                    "numbers of running, queued, waiting and infeasible tasks, and the "
                    "reservations (capacity held on one worker).")
    add_connect_options(p, timeout="the scheduler's answer")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p.add_argument("--watch", nargs="?", type=float, const=1.0, default=None,
                   metavar="SECONDS",
                   help="show it again every SECONDS (default 1) until interrupted")
    p.set_defaults(func=run)


def fetch_status(address: str, token: str, timeout: float = 10.0) -> dict[str, Any]:
    conn = SyncConnection(address, token, "driver", timeout=timeout)
    deadline = Deadline(timeout)
    try:
        conn.send([StatusRequest(1)])
        while (left := deadline.remaining()) > 0:
            for msg in conn.receive(left):
                if isinstance(msg, StatusReply):
                    return msg.status
    finally:
        conn.close()
    raise GetTimeoutError(f"the scheduler at {address} sent no status within {timeout:g} s")


def render(status: dict[str, Any]) -> str:
    lines = [f"{len(status['workers'])} worker(s), {status['clients']} driver(s), "
             f"{status['objects']} object(s)"]
    for w in status["workers"]:
        total = ", ".join(f"{k}={v}" for k, v in w["total"].items())
        free = ", ".join(f"{k}={v}" for k, v in w["free"].items())
        lines.append(f"  worker {w['id']} {w['name']}: total {{{total}}} free {{{free}}}"
                     f" executors={w['executors']} running={w['running']}")
        lines.extend(_gpu_lines(w))
        store = (w.get("info") or {}).get("store_stats")
        if isinstance(store, dict):
            lines.append(_store_line(store))
        quantum = (w.get("info") or {}).get("quantum")
        if isinstance(quantum, dict):
            lines.extend(_quantum_lines(quantum))
    t = status["tasks"]
    lines.append(f"tasks: running={t['running']} queued={t['queued']} "
                 f"waiting={t['waiting']} infeasible={t['infeasible']}")
    for item in status["infeasible"]:
        lines.append(f"  infeasible x{item['count']}: {item['reason']}")
    if status.get("infeasible_more"):
        lines.append(f"  ... and {status['infeasible_more']} more infeasible target(s)")
    lines.extend(_reservation_lines(status.get("reservations") or []))
    sched = status.get("scheduler")
    if isinstance(sched, dict) and isinstance(sched.get("loop_lag_ms"), dict):
        lag = sched["loop_lag_ms"]
        lines.append(f"scheduler: event-loop lag avg {lag.get('avg', 0):.1f} ms, max "
                     f"{lag.get('max', 0):.1f} ms over the last {sched.get('window_s', 0):.0f} s")
    return "\n".join(lines)


def _reservation_lines(reservations: list[dict[str, Any]]) -> list[str]:
    """One line per reservation: its id and name, target, status, where, its tasks."""
    if not reservations:
        return []
    lines = [f"reservations: {len(reservations)}"]
    for r in reservations:
        target = ", ".join(f"{k}={v}" for k, v in (r.get("target") or {}).items())
        name = f" {r['name']!r}" if r.get("name") else ""
        where = f" on worker {r.get('worker_id')} {r['worker']}" if r.get("worker") else ""
        tenant = f" tenant={r['tenant']}" if r.get("tenant") else ""
        line = (f"  {r.get('id')}{name}: {{{target}}} {r.get('status')}{where} "
                f"tasks={r.get('tasks', 0)} executors={r.get('executors', 0)}{tenant}")
        if r.get("reason"):
            line += f" ({r['reason']})"
        lines.append(line)
    return lines


def _gpu_lines(worker: dict[str, Any]) -> list[str]:
    """The GPUs a worker offers (device ids) against those it detected, with a warning when
    it offers more than it has."""
    offered = list(worker.get("gpu_ids") or [])
    detected = (worker.get("info") or {}).get("gpus_detected")
    if not offered and not detected:
        return []
    plural = "GPU" if len(offered) == 1 else "GPUs"
    line = f"    gpus: {len(offered)} {plural} offered (devices {', '.join(offered) or '-'})"
    if detected is None:
        return [line]
    lines = [f"{line}, {detected} detected"]
    if len(offered) > detected:
        lines.append(f"    WARNING: {len(offered)} {plural} offered but {detected} detected: "
                     "GPU tasks placed here will find no device")
    return lines


def _store_line(s: dict[str, Any]) -> str:
    """A worker's object store: use against capacity, objects, spilling."""
    def size(n: int) -> str:
        return format_bytes(n, trim=False)

    return (f"    store: {size(s.get('used', 0))} used of {size(s.get('capacity', 0))}, "
            f"{s.get('objects', 0)} object(s), {s.get('pinned', 0)} pinned, "
            f"{s.get('spilled', 0)} spilled ({size(s.get('spilled_bytes', 0))}), "
            f"{s.get('evictions', 0)} evicted")


def _quantum_lines(quantum: dict[str, Any]) -> list[str]:
    """A worker's simulators on one line (largest state in qubits, double precision), then
    its warnings."""
    if quantum.get("error"):
        return [f"    quantum: {quantum['error']}"]
    devices = []
    for device, methods in quantum.get("max_qubits", {}).items():
        sizes = ", ".join(f"{m} {p.get('double')}q" for m, p in methods.items())
        devices.append(f"{device}: {sizes}")
    head = f"    quantum (aer {quantum.get('aer_version', '?')}, max qubits in double): "
    return [head + ("; ".join(devices) or "none")] + [
        f"    WARNING: {text}" for text in quantum.get("warnings", [])]


def run(args: argparse.Namespace) -> int:
    address, token = connect_args(args)
    if args.watch is not None:
        return watch(address, token, args)
    status = fetch_status(address, token, args.timeout)
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def watch(address: str, token: str, args: argparse.Namespace) -> int:
    """`qsrv status --watch`: one connection, a status every interval; a terminal is redrawn
    in place, anything else gets one block (or JSON line) per status."""
    import sys
    import time

    interval = max(0.1, args.watch)
    tty = sys.stdout.isatty()
    conn = SyncConnection(address, token, "driver", timeout=args.timeout)
    req = 0
    try:
        while True:
            req += 1
            conn.send([StatusRequest(req)])
            deadline = Deadline(args.timeout)
            status = None
            while status is None and (left := deadline.remaining()) > 0:
                for msg in conn.receive(left):
                    if isinstance(msg, StatusReply) and msg.req_id == req:
                        status = msg.status
            if status is None:
                raise GetTimeoutError(f"the scheduler at {address} sent no status within "
                                      f"{args.timeout:g} s")
            stamp = time.strftime("%H:%M:%S")
            if args.json:
                print(json.dumps({"time": time.time(), "status": status}), flush=True)
            elif tty:
                sys.stdout.write(f"\x1b[H\x1b[2J{address} at {stamp} (every {interval:g} s, "
                                 f"Ctrl-C to stop)\n{render(status)}\n")
                sys.stdout.flush()
            else:
                print(f"--- {stamp}\n{render(status)}", flush=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        conn.close()
