"""What watching costs: throughput of the 20,000-task workload (bench_tasks' noop tasks on
``qsrv.init(num_cpus=2)``) and the scheduler's memory, in one run, three ways:

* ``recording off``: the scheduler started with ``QSRV_MONITOR=0`` (keeps no task events);
* ``no dashboard``: the default scheduler (it records task events for monitors, nobody
  watches);
* ``dashboard``: the default scheduler with ``qsrv dashboard`` following it (updates every
  0.5 s) and a page open on it (a process reading its server-sent event stream).

Each configuration runs in its own child process, `--rounds` times, interleaved (so the
machine's drift falls on all three alike); the table shows medians. Memory: the scheduler's
RSS after warm-up, after the measured 20,000 tasks, and after `--more` tasks beyond (the
event ring is full by then: what it holds is bounded whatever runs); the dashboard's RSS.
Not a test: numbers only, on a shared machine.

    python benchmarks/bench_dashboard.py [--rounds 3] [--tput 20000] [--more 60000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

CONFIGS = ("recording off", "no dashboard", "dashboard")
READER = r"""
import http.cookiejar, sys, urllib.request
url = sys.argv[1]
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
opener.open(url).read()
base = url.split("?", 1)[0]
n = 0
with opener.open(base + "api/stream") as stream:
    while chunk := stream.read1(65536):
        n += len(chunk)
        if chunk.count(b"event: update"):
            print(n, flush=True)
"""


def noop() -> None:
    return None


def child(config: str, counts: dict[str, Any], out: Path) -> None:
    os.environ["QSRV_MONITOR"] = "0" if config == "recording off" else "1"
    cl = c.start("qsrv")
    import qsrv
    from qsrv.client import connected

    sched = cl.server_pids()["scheduler"]
    extra: list[subprocess.Popen[str]] = []
    dash_pid = 0
    if config == "dashboard":
        driver = connected().driver
        assert driver is not None
        env = c.child_env(QSRV_TOKEN=driver.token)
        dash = subprocess.Popen([sys.executable, "-m", "qsrv", "dashboard", "--address",
                                 driver.address, "--port", "0", "--interval", "0.5"],
                                stdout=subprocess.PIPE, text=True, env=env)
        extra.append(dash)
        assert dash.stdout is not None
        url = dash.stdout.readline().split(": ", 1)[1].strip()
        dash_pid = dash.pid
        reader = subprocess.Popen([sys.executable, "-c", READER, url],
                                  stdout=subprocess.PIPE, text=True, env=env)
        extra.append(reader)
        assert reader.stdout is not None
        reader.stdout.readline()  # the page has its first update
    submit = cl.task(noop)
    cl.gather([submit() for _ in range(2000)])
    time.sleep(1.0)
    rss_warm = c.rss(sched)
    n = counts["tput"]
    cpu0 = c.cpu_seconds(sched)
    watchers = [p.pid for p in extra]
    watch0 = sum(c.cpu_seconds(p) for p in watchers)
    t0 = time.perf_counter()
    refs = [submit() for _ in range(n)]
    values = cl.gather(refs)
    took = time.perf_counter() - t0
    sched_cpu = (c.cpu_seconds(sched) - cpu0) / n * 1e6
    watch_cpu = (sum(c.cpu_seconds(p) for p in watchers) - watch0) / n * 1e6
    assert len(values) == n
    del refs, values
    time.sleep(1.0)
    rss_after = c.rss(sched)
    done = 0
    while done < counts["more"]:
        batch = min(20_000, counts["more"] - done)
        cl.gather([submit() for _ in range(batch)])
        done += batch
    time.sleep(1.0)
    rss_more = c.rss(sched)
    monitor = qsrv.status()  # the scheduler still answers, whatever watched
    result = {
        "config": config, "tasks_per_s": n / took, "seconds": took,
        "scheduler_cpu_us_per_task": sched_cpu, "watchers_cpu_us_per_task": watch_cpu,
        "scheduler_rss": {"warm": rss_warm, "after_tput": rss_after, "after_more": rss_more},
        "dashboard_rss": c.rss(dash_pid) if dash_pid else None,
        "workers": len(monitor["workers"]),
    }
    for proc in extra:
        proc.kill()
    c.child_done(out, result, cl.shutdown)


def render(res: dict[str, Any]) -> str:
    rows = res["configs"]
    base = rows.get("recording off", {}).get("tasks_per_s")
    nodash = rows.get("no dashboard", {}).get("tasks_per_s")
    lines = [
        f"bench_dashboard: {res['counts']['tput']} noop tasks, qsrv.init(num_cpus=2), "
        f"median of {res['rounds']} rounds (interleaved); then {res['counts']['more']} more",
        "",
        "| configuration | tasks/s (median) | best | vs recording off | vs no dashboard "
        "| scheduler CPU/task "
        "| dashboard + page CPU/task | scheduler RSS warm / after 20k / after more "
        "| dashboard RSS |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        r = rows.get(name)
        if not r:
            continue
        tps = r["tasks_per_s"]
        rss = r["scheduler_rss"]
        lines.append(
            f"| {name} | {tps:,.0f} | {max(res['rounds_tps'].get(name) or [0]):,.0f} "
            f"| {c.ratio(tps, base)} | {c.ratio(tps, nodash)} "
            f"| {r['scheduler_cpu_us_per_task']:.1f} us "
            f"| {r['watchers_cpu_us_per_task']:.2f} us "
            f"| {c.fmt_bytes(rss['warm'])} / {c.fmt_bytes(rss['after_tput'])} / "
            f"{c.fmt_bytes(rss['after_more'])} "
            f"| {c.fmt_bytes(r['dashboard_rss']) if r['dashboard_rss'] else '-'} |")
    lines.append("")
    lines.append("The machine is shared: compare the scheduler's CPU per task (stable) before "
                 "the throughput (its spread is in the rounds below).")
    lines.append("rounds (tasks/s): " + "; ".join(
        f"{name}: " + ", ".join(f"{x:,.0f}" for x in res["rounds_tps"].get(name, []))
        for name in CONFIGS))
    return "\n".join(lines)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0] if runs else {}
    good.sort(key=lambda r: r["tasks_per_s"])
    out = dict(good[len(good) // 2])
    for key in ("tasks_per_s", "scheduler_cpu_us_per_task", "watchers_cpu_us_per_task"):
        out[key] = statistics.median(r[key] for r in good)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tput", type=int, default=20_000)
    ap.add_argument("--more", type=int, default=60_000)
    ap.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--counts", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    counts = {"tput": args.tput, "more": args.more}
    if args.child:
        child(args.child, json.loads(args.counts), args.out)
        return
    res = c.new_run("dashboard", counts=counts, rounds=args.rounds, configs={})
    print(f"load average {res['loadavg_start']}; counts {counts}")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="bench_dashboard_") as tmp:
        for i in range(args.rounds):
            for name in CONFIGS:
                runs[name].append(c.run_child(
                    __file__, ["--child", name, "--counts", json.dumps(counts)],
                    f"{name} {i + 1}", 300, Path(tmp)))
    res["runs"] = runs
    res["rounds_tps"] = {n: [r["tasks_per_s"] for r in rs if "error" not in r]
                         for n, rs in runs.items()}
    res["configs"] = {n: _median_run(rs) for n, rs in runs.items()}
    res["loadavg_end"] = c.loadavg()
    print()
    print(render(res))
    print(f"\nwrote {c.save_run(res, args.json)}")


if __name__ == "__main__":
    main()
