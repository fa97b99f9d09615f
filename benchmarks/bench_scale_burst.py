"""Bursts: a million tasks submitted at once, then cancelled at once, on one scheduler.

    python benchmarks/bench_scale_burst.py                    # 1,000,000 tasks
    python benchmarks/bench_scale_burst.py --tasks 200000     # quicker
    python benchmarks/bench_scale_burst.py --json PATH        # write the run there

qsrv runs as CLI processes (``qsrv scheduler --port 0 --unix PATH``, one ``qsrv worker --cpus
1``), joined by this process with ``qsrv.init(address=...)``. After a warm-up (round trips, a
small burst submitted, cancelled and dropped), it measures:

* idle: RSS of the scheduler and of this driver;
* submit: ``--tasks`` no-op tasks with a target no worker offers (they stay queued) submitted
  in one loop; the time of the loop and until ``status()`` counts them all (ingest), with the
  CPU seconds the scheduler spent;
* queued: RSS of scheduler and driver (bytes per task over idle), the latency of ``status()``
  and of a no-op task's round trip with all of them queued, the scheduler's event-loop lag
  (``status()["scheduler"]``);
* cancel: every task cancelled in one loop, until every ref has its value
  (TaskCancelledError);
* drain: every ref dropped, until the scheduler holds no value; RSS of scheduler and driver
  two seconds later against idle (the ratio is what the target "within 20 %" is about), and
  ten seconds after that.

Meanwhile a second driver process (the prober) times a no-op round trip and a ``status()`` call
in turn, all the time: their median, p99 and maximum per phase show what a burst makes others
wait. Workers evicted at any time (the scheduler's log, worker ids in ``status()``) are counted.

The load average is recorded at the start and the end; timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

MiB = 2**20


# ---- the prober: another driver, timing a round trip and a status call in turn -------------
def probe(address: str, out: Path, stop: Path) -> None:
    import qsrv

    @qsrv.distribute_task(target={"cpu": 1})
    def ping() -> int:
        return 1

    qsrv.init(address=address)
    samples: list[tuple[float, str, float]] = []
    while not stop.exists():
        t0 = time.perf_counter()
        qsrv.get(ping(), timeout=300)
        t1 = time.perf_counter()
        qsrv.status(timeout=300)
        t2 = time.perf_counter()
        samples += [(time.time(), "round_trip", t1 - t0), (time.time(), "status", t2 - t1)]
        time.sleep(0.02)
    out.write_text(json.dumps(samples))
    qsrv.shutdown()


# ---- the cluster -----------------------------------------------------------------------------
class CliCluster:
    def __init__(self, workdir: Path, heartbeat_timeout: float) -> None:
        self.token = secrets.token_urlsafe(16)
        env = c.child_env()
        env["QSRV_TOKEN"] = self.token
        self.env = env
        sock = workdir / "scheduler.sock"
        self.log = workdir / "scheduler.log"
        self._logs = [open(self.log, "w"), open(workdir / "worker.log", "w")]  # noqa: SIM115
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "qsrv", "scheduler", "--port", "0", "--unix", str(sock),
             "--heartbeat-timeout", str(heartbeat_timeout), "--log-level", "info"],
            env=env, stdout=subprocess.PIPE, stderr=self._logs[0], text=True)
        assert self.scheduler.stdout is not None
        line = self.scheduler.stdout.readline()
        assert line.startswith("qsrv scheduler listening on "), line
        self.address = f"unix:{sock}"
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "qsrv", "worker", "--address", self.address, "--name", "w",
             "--cpus", "1"], env=env, stderr=self._logs[1])

    def evictions(self) -> list[str]:
        return [line.strip() for line in self.log.read_text().splitlines()
                if "removed" in line]

    def stop(self) -> None:
        for proc in (self.worker, self.scheduler):
            proc.terminate()
        for proc in (self.worker, self.scheduler):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in self._logs:
            f.close()


def wait_until(what: str, cond: Any, timeout: float, interval: float = 0.05) -> float:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)
    return time.perf_counter() - t0


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ms = sorted(v * 1e3 for v in values)
    return {"n": len(ms), "median_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], "max_ms": ms[-1]}


# ---- the measurement -------------------------------------------------------------------------
def measure(n: int, heartbeat_timeout: float, workdir: Path) -> dict[str, Any]:
    import qsrv
    from qsrv.errors import TaskCancelledError

    @qsrv.distribute_task(target={"nobody": 1})
    def queued() -> None:
        return None

    @qsrv.distribute_task(target={"cpu": 1})
    def noop() -> int:
        return 1

    cluster = CliCluster(workdir, heartbeat_timeout)
    res: dict[str, Any] = {"tasks": n, "heartbeat_timeout_s": heartbeat_timeout}
    prober: subprocess.Popen[bytes] | None = None
    try:
        qsrv.init(address=cluster.address, token=cluster.token)
        wait_until("the worker", lambda: any(w["executors"] for w in qsrv.status()["workers"]),
                   60)
        worker_ids = sorted(w["id"] for w in qsrv.status()["workers"])
        sched = cluster.scheduler.pid
        me = os.getpid()

        def status() -> dict[str, Any]:
            return qsrv.status(timeout=300)

        def drained() -> bool:  # (the prober keeps a task or two in flight)
            s = status()
            return s["objects"] < 10 and s["tasks"]["infeasible"] == 0

        # warm-up: every code path once, then idle
        for _ in range(50):
            qsrv.get(noop())
        refs = [queued() for _ in range(2000)]
        for r in refs:
            qsrv.cancel(r)
        qsrv.wait(refs, num_returns=len(refs))
        del refs, r
        gc.collect()
        wait_until("warm-up drained", drained, 60)
        time.sleep(1.0)  # a few ticks: compaction after the warm-up
        res["rss_idle"] = {"scheduler": c.rss(sched), "driver": c.rss(me)}

        stop = workdir / "probe.stop"
        probe_out = workdir / "probe.json"
        prober = subprocess.Popen(
            [sys.executable, __file__, "--child-probe", cluster.address, str(probe_out),
             str(stop)], env=cluster.env, cwd=c.HERE)
        wait_until("the prober", lambda: status()["clients"] >= 1, 60)
        time.sleep(1.0)
        phases: dict[str, tuple[float, float]] = {}
        t = time.time()
        phases["idle"] = (t - 1.0, t)

        # submit
        cpu0 = c.cpu_seconds(sched)
        t0 = time.time()
        p0 = time.perf_counter()
        refs = [queued() for _ in range(n)]
        res["submit_loop_s"] = time.perf_counter() - p0
        res["ingest_s"] = res["submit_loop_s"] + wait_until(
            "ingest", lambda: status()["tasks"]["infeasible"] >= n, 1800, interval=0.2)
        res["ingest_scheduler_cpu_s"] = c.cpu_seconds(sched) - cpu0
        phases["submit"] = (t0, time.time())

        # queued
        t0 = time.time()
        res["rss_queued"] = {"scheduler": c.rss(sched), "driver": c.rss(me)}
        res["bytes_per_task"] = {k: (res["rss_queued"][k] - res["rss_idle"][k]) / n
                                 for k in ("scheduler", "driver")}
        status_s, rt_s = [], []
        for _ in range(20):
            p0 = time.perf_counter()
            status()
            status_s.append(time.perf_counter() - p0)
            p0 = time.perf_counter()
            qsrv.get(noop())
            rt_s.append(time.perf_counter() - p0)
        res["queued_status"] = stats(status_s)
        res["queued_round_trip"] = stats(rt_s)
        res["loop_after_ingest"] = status().get("scheduler")
        phases["queued"] = (t0, time.time())

        # cancel
        t0 = time.time()
        p0 = time.perf_counter()
        for r in refs:
            qsrv.cancel(r)
        res["cancel_loop_s"] = time.perf_counter() - p0
        ready, _ = qsrv.wait(refs, num_returns=n, timeout=1800)
        res["cancel_s"] = time.perf_counter() - p0
        res["cancelled"] = len(ready)
        try:
            qsrv.get(refs[n // 2])
            res["cancel_error"] = "none"
        except TaskCancelledError:
            res["cancel_error"] = "TaskCancelledError"
        res["rss_cancelled"] = {"scheduler": c.rss(sched), "driver": c.rss(me)}
        phases["cancel"] = (t0, time.time())

        # drain
        t0 = time.time()
        p0 = time.perf_counter()
        del refs, ready, _
        gc.collect()
        res["drop_s"] = wait_until("drain", drained, 600, interval=0.2)
        time.sleep(2.0)  # compaction runs at the scheduler's next ticks
        res["rss_drained"] = {"scheduler": c.rss(sched), "driver": c.rss(me)}
        res["rss_ratio_drained_to_idle"] = {
            k: res["rss_drained"][k] / res["rss_idle"][k] for k in ("scheduler", "driver")}
        final = status()
        res["loop_at_end"] = final.get("scheduler")
        phases["drain"] = (t0, time.time())
        time.sleep(10.0)  # and ten seconds later, the prober still at work
        res["rss_settled"] = {"scheduler": c.rss(sched), "driver": c.rss(me)}

        stop.write_text("")
        prober.wait(600)
        samples = json.loads(probe_out.read_text())
        res["prober"] = {
            phase: {kind: stats([v for ts, k, v in samples if k == kind and a <= ts <= b])
                    for kind in ("round_trip", "status")}
            for phase, (a, b) in phases.items()}
        res["worker_ids_before"] = worker_ids
        res["worker_ids_after"] = sorted(w["id"] for w in final["workers"])
        res["evictions"] = cluster.evictions()
    finally:
        if prober is not None and prober.poll() is None:
            prober.kill()
        qsrv.shutdown()
        cluster.stop()
    return res


def report(res: dict[str, Any]) -> str:
    def mib(x: float) -> str:
        return f"{x / MiB:.0f} MiB"

    idle, q, d = res["rss_idle"], res["rss_queued"], res["rss_drained"]
    lines = [
        f"{res['tasks']:,} tasks; load average {res['loadavg_start']} -> "
        f"{res.get('loadavg_end', '?')}",
        "",
        "| | scheduler | driver |",
        "|---|---:|---:|",
        f"| RSS idle | {mib(idle['scheduler'])} | {mib(idle['driver'])} |",
        f"| RSS with all queued | {mib(q['scheduler'])} | {mib(q['driver'])} |",
        f"| bytes per queued task | {res['bytes_per_task']['scheduler']:.0f} | "
        f"{res['bytes_per_task']['driver']:.0f} |",
        f"| RSS after cancel + drop | {mib(d['scheduler'])} | {mib(d['driver'])} |",
        f"| after / idle | {res['rss_ratio_drained_to_idle']['scheduler']:.2f} | "
        f"{res['rss_ratio_drained_to_idle']['driver']:.2f} |",
        f"| RSS 10 s later | {mib(res['rss_settled']['scheduler'])} | "
        f"{mib(res['rss_settled']['driver'])} |",
        "",
        f"submit loop {res['submit_loop_s']:.1f} s; ingested after {res['ingest_s']:.1f} s "
        f"(scheduler CPU {res['ingest_scheduler_cpu_s']:.1f} s, "
        f"{res['ingest_scheduler_cpu_s'] / res['tasks'] * 1e6:.1f} us per task)",
        f"with all queued: status() median {res['queued_status']['median_ms']:.1f} ms "
        f"(max {res['queued_status']['max_ms']:.1f}); no-op round trip median "
        f"{res['queued_round_trip']['median_ms']:.1f} ms (max "
        f"{res['queued_round_trip']['max_ms']:.1f})",
        f"cancel loop {res['cancel_loop_s']:.1f} s; every value back after "
        f"{res['cancel_s']:.1f} s ({res['cancelled']:,}, get: {res['cancel_error']}); "
        f"refs dropped -> scheduler empty after {res['drop_s']:.1f} s",
        f"event-loop lag after ingest: {res['loop_after_ingest']}",
        f"event-loop lag at the end (last minute): {res['loop_at_end']}",
        "",
        "another driver meanwhile (ms): | phase | round trip median / p99 / max | status "
        "median / p99 / max |",
        "|---|---:|---:|",
    ]
    for phase, kinds in res["prober"].items():
        cells = []
        for kind in ("round_trip", "status"):
            s = kinds[kind]
            cells.append(f"{s['median_ms']:.1f} / {s['p99_ms']:.1f} / {s['max_ms']:.1f} "
                         f"(n={s['n']})" if s["n"] else "-")
        lines.append(f"| {phase} | {cells[0]} | {cells[1]} |")
    lines += ["", f"workers before {res['worker_ids_before']}, after "
                  f"{res['worker_ids_after']}; evictions: {len(res['evictions'])}"]
    lines += [f"  {line}" for line in res["evictions"]]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child-probe":
        probe(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--heartbeat-timeout", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    args = parser.parse_args()
    res = c.new_run("scale_burst", tasks=args.tasks)
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
        res.update(measure(args.tasks, args.heartbeat_timeout, Path(tmp)))
    res["loadavg_end"] = c.loadavg()
    print(report(res))
    print(f"wrote {c.save_run(res, args.json)}")


if __name__ == "__main__":
    main()
