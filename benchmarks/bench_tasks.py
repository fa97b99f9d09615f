"""Task round trip, throughput and memory per queued task: qsrv vs Ray vs Dask vs the machine.

    python benchmarks/bench_tasks.py                 # full run (~4-6 min on 2 cores)
    python benchmarks/bench_tasks.py --quick         # smaller counts (~2 min)
    python benchmarks/bench_tasks.py --only qsrv,baseline
    python benchmarks/bench_tasks.py --skip-memory   # round trip and throughput only
    python benchmarks/bench_tasks.py --write-md      # also update benchmarks/README.md
    python benchmarks/bench_tasks.py --from-json benchmarks/results/tasks.json

Every system gets two worker slots (see ``_qsrv.py``, ``_ray.py``, ``_dask.py``). Each
measurement runs in a fresh subprocess per system (this file with ``--child SYSTEM:PHASE``), so
no system's memory or threads pollute another's; the parent collects their JSON, prints the
table with the ratios and writes the run to benchmarks/results/runs/tasks-<time>.json.

* ``latency`` phase: (1) round trip: one no-op task submitted and awaited, ``--rt`` times after
  a warm-up; median and p99 of the per-call wall time. (2) throughput: ``--tput`` no-op tasks
  submitted at once, then all gathered; tasks/s over submit + gather (submit rate alone too).
  For both, the CPU time every process of the system spent per task (``_common.cpu_seconds``).
* ``memory`` phase: (3) ``--mem`` tasks that wait on a resource nobody has (qsrv
  ``target={"cpu": 1, "nothing": 1}``, Ray ``resources={"nothing": 1}``, Dask
  ``submit(..., resources={"nothing": 1})`` with workers that do not declare it). The figure is
  the RSS growth (psutil's ``memory_info().rss``, i.e. VmRSS, before the first submission ->
  after all are queued and RSS has settled) of the *driver + scheduler* processes, divided by
  the count:
    - qsrv: the driver and its child ``python -m qsrv scheduler ...`` (found among the driver's
      descendants by command line; the worker agent and executors are reported apart);
    - Ray: the driver, ``raylet`` and ``gcs_server`` (descendants of the driver, by process
      name); Ray queues pending tasks in the driver's core worker;
    - Dask: the client process alone: LocalCluster runs the scheduler (and the nannies) in the
      client's process, so "client + scheduler" is one RSS.
  Submission is capped by ``--mem-budget`` seconds; if a system cannot submit the full count in
  that time, the count it reached is used and reported (``count`` in the table).
* (4) the machine's own limit: process-to-process ping-pong of 64-byte messages
  (``_machine.py``: blocking sockets, uvloop protocols on both ends, Unix domain sockets, and a
  4-hop relay chain shaped like a task round trip), measured at the start and at the end of the
  run; the table shows the mean of the two medians (and of the two p99s).

The load average is recorded at the start and the end: these machines are shared, and a high
load explains a noisy figure. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import _machine

TAG = "bench_tasks"
FULL = {"rt": 1000, "rt_warmup": 200, "tput": 20_000, "mem": 100_000, "mem_budget": 60.0,
        "pingpong": 5000}
QUICK = {"rt": 300, "rt_warmup": 50, "tput": 5000, "mem": 20_000, "mem_budget": 15.0,
         "pingpong": 2000}


def noop() -> None:
    return None


# ---- in a child process: one system, one phase -----------------------------------------------
def _cpu_by_role(procs: dict[int, str], before: dict[int, float], n: int) -> dict[str, float]:
    cpu: dict[str, float] = {}
    for p, role in procs.items():
        cpu[role] = cpu.get(role, 0.0) + (c.cpu_seconds(p) - before[p]) / n * 1e6
    return cpu


def phase_latency(cl: c.Cluster, counts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    submit, get, gather = cl.task(noop), cl.get, cl.gather
    clock = time.perf_counter_ns
    for _ in range(counts["rt_warmup"]):
        get(submit())
    gather([submit() for _ in range(max(100, counts["tput"] // 10))])
    gc.collect()
    procs = {os.getpid(): "driver", **{p.pid: cl.role(p) for p in c.descendants()}}
    cpu0 = {p: c.cpu_seconds(p) for p in procs}
    samples = []
    for _ in range(counts["rt"]):
        start = clock()
        get(submit())
        samples.append(clock() - start)
    out["round_trip"] = c.summarize_ns(samples)
    out["round_trip"]["cpu_us_per_task"] = _cpu_by_role(procs, cpu0, counts["rt"])

    n = counts["tput"]
    gc.collect()
    cpu0 = {p: c.cpu_seconds(p) for p in procs}
    t0 = time.perf_counter()
    refs = [submit() for _ in range(n)]
    t1 = time.perf_counter()
    values = gather(refs)
    t2 = time.perf_counter()
    cpu = _cpu_by_role(procs, cpu0, n)
    assert len(values) == n and values[0] is None
    out["throughput"] = {"n": n, "tasks_per_s": n / (t2 - t0), "submit_per_s": n / (t1 - t0),
                         "seconds": t2 - t0, "cpu_us_per_task": cpu,
                         "cpu_us_per_task_total": sum(cpu.values())}
    del refs, values
    return out


def phase_memory(cl: c.Cluster, counts: dict[str, Any]) -> dict[str, Any]:
    submit, blocked = cl.task(noop), cl.task(noop, resources={"nothing": 1})
    # warm up the submit path and every process, then let dropped refs be released
    cl.gather([submit() for _ in range(200)])
    gc.collect()
    time.sleep(1.0)
    counted = {"driver": os.getpid(), **cl.server_pids()}
    others = [p for p in c.descendants() if p.pid not in counted.values()]
    before = {k: c.rss(p) for k, p in counted.items()}
    others_before = sum(c.rss(p) for p in others)

    n, budget = counts["mem"], counts["mem_budget"]
    refs = []
    t0 = time.perf_counter()
    deadline = t0 + budget
    for i in range(n):
        refs.append(blocked())
        if i % 1000 == 999 and time.perf_counter() > deadline:
            break
    submitted = len(refs)
    t_submit = time.perf_counter() - t0
    # wait until the scheduler holds all of them (where it can be asked), then for RSS to settle
    waited_for_queue = None
    if cl.queued() is not None:
        limit = time.perf_counter() + max(30.0, budget)
        while time.perf_counter() < limit:
            q = cl.queued()
            if q is not None and q >= submitted:
                break
            time.sleep(0.2)
        waited_for_queue = cl.queued()
    t_queued = time.perf_counter() - t0
    last, stable, settle_start = -1, 0, time.perf_counter()
    while time.perf_counter() - settle_start < 20 and stable < 3:
        time.sleep(0.5)
        gc.collect()
        total = sum(c.rss(p) for p in counted.values())
        stable = stable + 1 if last > 0 and abs(total - last) < 0.002 * last else 0
        last = total
    after = {k: c.rss(p) for k, p in counted.items()}
    others_after = sum(c.rss(p) for p in others)
    growth = sum(after.values()) - sum(before.values())
    result = {
        "count": submitted, "requested": n, "reduced": submitted < n,
        "submit_seconds": t_submit, "queued_seconds": t_queued,
        "scheduler_queue": waited_for_queue, "pids": counted,
        "rss_before": before, "rss_after": after, "growth_bytes": growth,
        "bytes_per_task": growth / submitted,
        "per_process_bytes_per_task": {k: (after[k] - before[k]) / submitted for k in counted},
        "others_bytes_per_task": (others_after - others_before) / submitted,
    }
    del refs
    return result


def child(spec: str, counts: dict[str, Any], out: Path) -> None:
    name, phase = spec.split(":")
    if name == "baseline":
        c.child_done(out, {f: _machine.pingpong(f, counts["pingpong"])
                           for f in _machine.FLAVOURS})  # exits
    t0 = time.perf_counter()
    cl = c.start(name)
    result: dict[str, Any] = {"startup_seconds": time.perf_counter() - t0}
    result.update((phase_latency if phase == "latency" else phase_memory)(cl, counts))
    c.child_done(out, result, cl.shutdown)


# ---- the report ------------------------------------------------------------------------------
def render(res: dict[str, Any]) -> str:
    sysres = res["systems"]
    pp = res.get("pingpong", {})
    lines = [
        f"Run {res['date']} on {c.describe(res['machine'])}; mode {res['mode']}; load average "
        f"at start {res['loadavg_start']}, at end {res['loadavg_end']}; total "
        f"{res['seconds']:.0f} s.",
        "",
        "| system | round trip median µs | p99 µs | throughput tasks/s | submit only tasks/s "
        "| bytes per queued task (driver+scheduler) | queued count | startup s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in c.SYSTEMS:
        if name not in sysres:
            continue
        lat, mem = sysres[name].get("latency", {}), sysres[name].get("memory", {})
        count = c.dig(mem, "count")
        cnt = "—" if count is None else (f"{count:,}" + (" (reduced)" if mem.get("reduced")
                                                           else ""))
        lines.append(
            f"| {name} | {c.fmt(c.dig(lat, 'round_trip', 'median_us'), ',.0f')} "
            f"| {c.fmt(c.dig(lat, 'round_trip', 'p99_us'), ',.0f')} "
            f"| {c.fmt(c.dig(lat, 'throughput', 'tasks_per_s'), ',.0f')} "
            f"| {c.fmt(c.dig(lat, 'throughput', 'submit_per_s'), ',.0f')} "
            f"| {c.fmt(c.dig(mem, 'bytes_per_task'), ',.0f')} | {cnt} "
            f"| {c.fmt(c.dig(lat, 'startup_seconds'), '.1f')} |")
    for flavour, label in (("raw", "ping-pong, blocking sockets (2 hops)"),
                           ("uvloop", "ping-pong, uvloop both ends (2 hops)"),
                           ("unix", "ping-pong, blocking Unix domain sockets (2 hops)"),
                           ("relay", "relay chain, client→relay→echo→relay→client (4 hops)")):
        if flavour in pp:
            lines.append(f"| {label} | {pp[flavour]['median_us']:,.0f} "
                         f"| {pp[flavour]['p99_us']:,.0f} | | | | | |")
    mems = [(name, c.dig(sysres, name, "memory")) for name in c.SYSTEMS]
    if any(m and "per_process_bytes_per_task" in m for _, m in mems):
        lines += ["", "Memory per queued task, by process (bytes per task):", ""]
    for name, mem in mems:
        if mem and "per_process_bytes_per_task" in mem:
            parts = ", ".join(f"{k} {v:,.0f}" for k, v in mem["per_process_bytes_per_task"].items())
            lines.append(f"- {name}: {parts}; other processes (not counted) "
                         f"{mem['others_bytes_per_task']:,.0f}; submitting took "
                         f"{mem['submit_seconds']:.1f} s, queued after "
                         f"{mem['queued_seconds']:.1f} s")
    lines += ["", "CPU time per task, by process (µs on a CPU per task, summed over the "
              "process's threads from /proc/PID/task/*/schedstat):", ""]
    for what, key in (("round trips", "round_trip"), ("throughput run", "throughput")):
        for name in c.SYSTEMS:
            cpu = c.dig(sysres, name, "latency", key, "cpu_us_per_task")
            if cpu:
                parts = ", ".join(f"{k} {v:,.0f}" for k, v in
                                  sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.5)
                lines.append(f"- {name}, {what}: total {sum(cpu.values()):,.0f} = {parts}")

    def fig(name: str, *path: str) -> Any:
        return c.dig(sysres, name, *path)

    rt = ("latency", "round_trip", "median_us")
    tp = ("latency", "throughput", "tasks_per_s")
    mb = ("memory", "bytes_per_task")
    lines += [
        "",
        "| ratio | value | target |",
        "|---|---:|---|",
        f"| round trip, qsrv / Ray | {c.ratio(fig('qsrv', *rt), fig('ray', *rt))} | ≤ 0.20x |",
        f"| round trip, qsrv / Dask | {c.ratio(fig('qsrv', *rt), fig('dask', *rt))} | |",
        f"| round trip, qsrv / ping-pong (blocking) | "
        f"{c.ratio(fig('qsrv', *rt), c.dig(pp, 'raw', 'median_us'))} | ≤ 4x |",
        f"| round trip, qsrv / ping-pong (uvloop) | "
        f"{c.ratio(fig('qsrv', *rt), c.dig(pp, 'uvloop', 'median_us'))} | |",
        f"| round trip, qsrv / 4-hop relay chain | "
        f"{c.ratio(fig('qsrv', *rt), c.dig(pp, 'relay', 'median_us'))} | |",
        f"| throughput, qsrv / Ray | {c.ratio(fig('qsrv', *tp), fig('ray', *tp))} | ≥ 5x |",
        f"| throughput, qsrv / Dask | {c.ratio(fig('qsrv', *tp), fig('dask', *tp))} | |",
        f"| memory per queued task, qsrv / Ray | {c.ratio(fig('qsrv', *mb), fig('ray', *mb))} "
        f"| qsrv ≤ 1,024 B |",
        f"| memory per queued task, qsrv / Dask | "
        f"{c.ratio(fig('qsrv', *mb), fig('dask', *mb))} | |",
    ]
    return "\n".join(lines)


# ---- the parent ------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (~2 min)")
    ap.add_argument("--only", default="qsrv,ray,dask,baseline",
                    help="comma-separated subset of qsrv,ray,dask,baseline")
    ap.add_argument("--skip-memory", action="store_true",
                    help="leave out the memory phase (round trip and throughput only)")
    ap.add_argument("--write-md", action="store_true",
                    help="replace the results block in benchmarks/README.md")
    ap.add_argument("--rt", type=int, help="round trips (default 1000, quick 300)")
    ap.add_argument("--tput", type=int, help="tasks for throughput (default 20000, quick 5000)")
    ap.add_argument("--mem", type=int, help="queued tasks for memory (default 100000)")
    ap.add_argument("--mem-budget", type=float, help="seconds allowed to submit them (60)")
    ap.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    ap.add_argument("--from-json", metavar="PATH",
                    help="print (and with --write-md, paste) the table of a saved run; no run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--counts", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, json.loads(args.counts), args.out)
        return
    if args.from_json:
        res = c.load_run(args.from_json)
        print(render(res))
        if args.write_md:
            c.publish(res, render(res), TAG)
        return

    counts: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for key in ("rt", "tput", "mem", "mem_budget"):
        if getattr(args, key) is not None:
            counts[key] = getattr(args, key)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = set(only) - {*c.SYSTEMS, "baseline"}
    if bad:
        ap.error(f"unknown system(s) {sorted(bad)}")
    phases = ("latency",) if args.skip_memory else ("latency", "memory")

    res = c.new_run("tasks", mode="quick" if args.quick else "full", counts=counts,
                    systems={})
    print(f"load average {res['loadavg_start']}; counts {counts}")
    t0 = time.perf_counter()
    limit = 240.0 if not args.quick else 90.0
    with tempfile.TemporaryDirectory(prefix="bench_tasks_") as tmp:

        def run(spec: str, timeout: float) -> dict[str, Any]:
            return c.run_child(__file__, ["--child", spec, "--counts", json.dumps(counts)],
                               spec, timeout, Path(tmp))

        runs = []
        if "baseline" in only:
            runs.append(run("baseline:start", 60))
        for name in c.SYSTEMS:
            if name in only:
                res["systems"][name] = {ph: run(f"{name}:{ph}", limit) for ph in phases}
        if "baseline" in only:
            runs.append(run("baseline:end", 60))
            res["pingpong_runs"] = {"start": runs[0], "end": runs[1]}
            res["pingpong"] = c.mean_of(runs)
    res["loadavg_end"] = c.loadavg()
    res["seconds"] = time.perf_counter() - t0
    table = render(res)
    print()
    print(table)
    print(f"\nwrote {c.save_run(res, args.json)}")
    if args.write_md:
        c.publish(res, table, TAG)


if __name__ == "__main__":
    main()
