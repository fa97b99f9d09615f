"""What watching costs: throughput of the 20,000-task workload (bench_tasks' noop tasks on
``qsrv.init(num_cpus=2)``) and the scheduler's memory, in one run, three ways:

* ``recording off``: the scheduler started with ``QSRV_MONITOR=0`` (keeps no task events);
* ``no dashboard``: the default scheduler (it records task events for monitors, nobody
  watches);
* ``dashboard``: the default scheduler with ``qsrv dashboard`` following it (updates every
  0.5 s) and a page open on it (a process reading its server-sent event stream).

Each configuration runs in its own child process, `--rounds` times, interleaved (so the
machine's drift falls on all three alike); the table shows medians.

The cost is judged on the scheduler's CPU time per task (on-CPU nanoseconds of its threads,
/proc schedstat), not on wall throughput: on a shared machine the throughput of one round
swings by tens of percent with what else runs, while the CPU the scheduler spends per task
moves little. Rounds are paired (round i of each configuration ran back to back): the
report gives the median of the per-round ratios, their spread (lowest..highest), and the
verdict against the 5% the dashboard may cost. Memory: the scheduler's
RSS after warm-up, after the measured 20,000 tasks, and after `--more` tasks beyond (the
event ring is full by then: what it holds is bounded whatever runs); the dashboard's RSS.
Not a test: numbers only, on a shared machine.

    python benchmarks/bench_dashboard.py [--rounds 3] [--tput 20000] [--more 60000]
    python benchmarks/bench_dashboard.py --replay [--rounds 30]

``--replay`` measures the same cost where the machine's noise cannot reach it: in one
process, the scheduler's state machine (and its monitor, as the IO layer calls it) handles
the messages of 20,000 no-op tasks (a driver's submissions in frames of 1,000, two
executors' results in frames of 33, as measured on a local cluster), over and over, the
three configurations taking turns chunk by chunk; CPU time of this process per task, the
median of the paired differences, against the scheduler's whole CPU per task measured on a
cluster (the state machine is only part of it, so the replay's own ratio is an upper bound).
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
    cpu = res.get("rounds_cpu", {})
    lines.append("rounds (scheduler CPU us/task): " + "; ".join(
        f"{name}: " + ", ".join(f"{x:.1f}" for x in cpu.get(name, [])) for name in CONFIGS))
    for label, (a, b) in (("dashboard / no dashboard", ("dashboard", "no dashboard")),
                          ("dashboard / recording off", ("dashboard", "recording off")),
                          ("no dashboard / recording off", ("no dashboard", "recording off"))):
        r = paired_ratios(cpu.get(a, []), cpu.get(b, []))
        if r:
            lines.append(f"scheduler CPU per task, {label}: median {statistics.median(r):.3f} "
                         f"(rounds {min(r):.3f}..{max(r):.3f}, n={len(r)}); pooled medians "
                         f"{_median(cpu[a]) / _median(cpu[b]):.3f}")
    verdict = res.get("verdict")
    if verdict:
        lines.append(verdict)
    lines.append("rounds (tasks/s): " + "; ".join(
        f"{name}: " + ", ".join(f"{x:,.0f}" for x in res["rounds_tps"].get(name, []))
        for name in CONFIGS))
    return "\n".join(lines)


def _median(xs: list[float | None]) -> float:
    return statistics.median(x for x in xs if x)


def paired_ratios(a: list[float | None], b: list[float | None]) -> list[float]:
    """a[i] / b[i] for the rounds where both ran (round i of each ran back to back)."""
    return [x / y for x, y in zip(a, b, strict=False) if x and y]


def verdict(cpu: dict[str, list[float | None]], limit: float = 0.05) -> str:
    """Whether a dashboard attached costs the scheduler at most ``limit`` more CPU per task
    than recording off (the whole cost of watching), on the median of paired rounds."""
    r = paired_ratios(cpu.get("dashboard", []), cpu.get("recording off", []))
    if not r:
        return ""
    cost = statistics.median(r) - 1.0
    return (f"verdict: a dashboard attached costs the scheduler {cost:+.1%} CPU per task "
            f"against recording off (limit {limit:.0%}): "
            f"{'within' if cost <= limit else 'OVER'} the limit")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0] if runs else {}
    good.sort(key=lambda r: r["tasks_per_s"])
    out = dict(good[len(good) // 2])
    for key in ("tasks_per_s", "scheduler_cpu_us_per_task", "watchers_cpu_us_per_task"):
        out[key] = statistics.median(r[key] for r in good)
    return out


class _Watcher:
    """A monitor connection as the IO layer has it: each update is encoded as a frame."""

    closed = False

    def __init__(self) -> None:
        self.bytes = 0

    def send(self, msg: Any) -> None:
        from qsrv.protocol import encode_frame_of

        self.bytes += sum(len(memoryview(b)) for b in encode_frame_of([msg]))


def _replay_cluster(config: str) -> Any:
    """A scheduler state with a worker, two executors and a driver; its monitor recording
    (or not, ``recording off``) and, for ``dashboard``, followed every 0.5 s."""
    from qsrv._resources import normalize_target
    from qsrv.protocol import MonitorRequest, RegisterExecutor, RegisterFunction, RegisterWorker
    from qsrv.scheduler._events import Connected, Received, Tick
    from qsrv.scheduler._monitor import Monitor
    from qsrv.scheduler._state import SchedulerState

    state = SchedulerState()
    state.handle(Tick(100.0))
    monitor = Monitor(state)
    if config == "recording off":  # as with QSRV_MONITOR=0
        state.recorder = None
        state.directory.failed = None
        monitor.observe = monitor._ignore  # type: ignore[method-assign]
    state.handle(Connected(1, "worker", 1))
    out = state.handle(Received(1, RegisterWorker("w", normalize_target({"cpu": 2}), [], 1,
                                                  {})))
    wid = out[0].msg.worker_id
    for conn in (2, 3):
        state.handle(Connected(conn, "executor", conn))
        state.handle(Received(conn, RegisterExecutor(wid, 1000 + conn)))
    state.handle(Connected(4, "driver", 4))
    state.handle(Received(4, RegisterFunction(b"f" * 16, b"payload")))
    if config == "dashboard":
        monitor._request(_Watcher(), MonitorRequest(1, 0.0, 0.5))  # type: ignore[arg-type]
    return state, monitor


def _replay_chunk(state: Any, monitor: Any, first: int, n: int) -> None:
    """``n`` no-op tasks through the state machine, from submission to their refs dropped."""
    from qsrv.protocol import ID_BITS, OK, RefUpdate, RunTask, SubmitTask, TaskDone
    from qsrv.scheduler._events import ReceivedBatch, Send

    base = 4 << ID_BITS
    pending: dict[int, list[int]] = {2: [], 3: []}
    done: list[int] = []

    def handle(conn: int, msgs: list[Any]) -> None:
        msgs = monitor.observe(conn, msgs)
        for action in state.handle(ReceivedBatch(conn, msgs)):
            if type(action) is Send and type(action.msg) is RunTask:
                pending[action.conn].append(action.msg.task_id)
        monitor.tick(time.monotonic())

    for start in range(first, first + n, 1000):
        handle(4, [SubmitTask(base + i, b"f" * 16, b"\x80\x04N.", (), [], {"cpu": 10_000},
                              0, 0.0, False, "bench.noop")
                   for i in range(start, min(start + 1000, first + n))])
    while any(pending.values()):
        for conn, ids in pending.items():
            frame, pending[conn] = ids[:33], ids[33:]
            if frame:
                handle(conn, [TaskDone(t, OK, b"\x80\x04N.", (), [], False, 2e-6)
                              for t in frame])
                done.extend(frame)
    handle(4, [RefUpdate([], done)])


def replay(rounds: int, chunk: int = 20_000) -> dict[str, Any]:
    """CPU seconds per task of the state machine and monitor, per configuration, the three
    taking turns chunk by chunk (in a rotating order) in this one process."""
    clusters = {name: _replay_cluster(name) for name in CONFIGS}
    us: dict[str, list[float]] = {name: [] for name in CONFIGS}
    next_id = dict.fromkeys(CONFIGS, 1)
    for name in CONFIGS:  # warm-up
        _replay_chunk(*clusters[name], next_id[name], 2000)
        next_id[name] += 2000
    for r in range(rounds):
        order = CONFIGS[r % 3:] + CONFIGS[:r % 3]
        for name in order:
            t0 = time.process_time()
            _replay_chunk(*clusters[name], next_id[name], chunk)
            us[name].append((time.process_time() - t0) / chunk * 1e6)
            next_id[name] += chunk
    return {"chunk": chunk, "us_per_task": us,
            "objects_left": {n: len(c[0].directory.objects) for n, c in clusters.items()},
            "events_kept": {n: len(c[1].events) for n, c in clusters.items()}}


def render_replay(res: dict[str, Any], whole_us: float | None) -> str:
    us = res["us_per_task"]
    lines = [f"replay: {res['chunk']} no-op tasks a chunk through the state machine and its "
             f"monitor, {len(us['dashboard'])} chunks per configuration, taking turns",
             "", "| configuration | CPU us/task (median) | lowest..highest |", "|---|---|---|"]
    for name in CONFIGS:
        lines.append(f"| {name} | {statistics.median(us[name]):.3f} | "
                     f"{min(us[name]):.3f}..{max(us[name]):.3f} |")
    lines.append("")
    for a, b in (("dashboard", "recording off"), ("no dashboard", "recording off"),
                 ("dashboard", "no dashboard")):
        diff = [x - y for x, y in zip(us[a], us[b], strict=True)]
        med = statistics.median(diff)
        q = statistics.quantiles(diff, n=4) if len(diff) >= 4 else [min(diff), 0, max(diff)]
        text = (f"{a} - {b}: {med:+.3f} us/task (paired chunks; quartiles {q[0]:+.3f}.."
                f"{q[2]:+.3f}); of the state machine's {statistics.median(us[b]):.2f} us: "
                f"{med / statistics.median(us[b]):+.1%}")
        if whole_us:
            text += f"; of the scheduler's whole {whole_us:.1f} us/task: {med / whole_us:+.1%}"
        lines.append(text)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tput", type=int, default=20_000)
    ap.add_argument("--more", type=int, default=60_000)
    ap.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    ap.add_argument("--replay", action="store_true",
                    help="measure the monitor's cost by replaying messages in this process")
    ap.add_argument("--whole-us", type=float, default=None,
                    help="with --replay: the scheduler's CPU per task on a cluster (us), "
                         "to state the cost against")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--counts", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    counts = {"tput": args.tput, "more": args.more}
    if args.child:
        child(args.child, json.loads(args.counts), args.out)
        return
    if args.replay:
        res = c.new_run("dashboard_replay", rounds=args.rounds)
        res.update(replay(args.rounds))
        res["loadavg_end"] = c.loadavg()
        print(render_replay(res, args.whole_us))
        print(f"\nwrote {c.save_run(res, args.json)}")
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
    res["rounds_cpu"] = {n: [r.get("scheduler_cpu_us_per_task") if "error" not in r else None
                             for r in rs] for n, rs in runs.items()}
    res["configs"] = {n: _median_run(rs) for n, rs in runs.items()}
    res["verdict"] = verdict(res["rounds_cpu"])
    res["loadavg_end"] = c.loadavg()
    print()
    print(render(res))
    print(f"\nwrote {c.save_run(res, args.json)}")


if __name__ == "__main__":
    main()
