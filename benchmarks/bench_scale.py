"""Holding up at scale: a million queued tasks, and clusters of many worker agents.

    python benchmarks/bench_scale.py                 # full run (~15 min on 2 cores)
    python benchmarks/bench_scale.py --quick         # 100,000 queued; 2/20/50 agents
    python benchmarks/bench_scale.py --only qsrv     # skip Ray
    python benchmarks/bench_scale.py --agents 2,50,100 --queued 1000000 --ray-agents 2,10
    python benchmarks/bench_scale.py --qsrv-root /tmp/old-checkout   # measure another qsrv
    python benchmarks/bench_scale.py --write-md      # also update benchmarks/README.md
    python benchmarks/bench_scale.py --from-json benchmarks/results/scale.json

Each measurement runs in a fresh subprocess (this file with ``--child SYSTEM:PHASE[:N]``). qsrv
runs as CLI processes (``qsrv scheduler --port 0``, ``qsrv worker ...``), joined with
``qsrv.init(address=...)``; Ray as ``ray.cluster_utils.Cluster`` (one raylet per agent).

* ``queued`` phase: (1) ``--queued`` no-op tasks submitted with a target no worker has yet
  (qsrv ``{"cpu": 1, "later": 1}``, Ray ``resources={"later": 1}``): the time to submit them
  and, for qsrv, until ``status()`` counts them all in the scheduler (ingest); the RSS growth of
  driver + scheduler per task (Ray: driver + raylet + gcs_server). (2) Meanwhile: round trips of
  a no-op task on the one worker with 2 CPUs (median, p99), and the latency of a status call
  (qsrv ``status()``; Ray has no task count without its dashboard: ``ray.nodes()`` +
  ``available_resources()``). (3) Drain: a worker offering ``later`` joins and every queued task
  runs; tasks/s, then all refs are dropped and the RSS of driver and scheduler is measured again
  (memory after drain, against before the submissions). Ray gets at most ``--ray-queued``
  tasks (its ~8 KB per task and ~2,000 tasks/s would take the machine for an hour at 1M).
* ``agents`` phase, for each N in ``--agents``: a scheduler and N agents; two of them run tasks
  (``--cpus 1 --executors 1``), the others are idle: with ``--idle nocpu`` (default) they offer
  no CPU (``--cpus 0 --executors 0``; nodes that cannot take these tasks), with
  ``--idle executors`` each offers ``--cpus 1`` with its own executor (every agent can take the
  tasks; N executor processes on two cores). Measured: registration (all N agents started at
  once -> all registered and the two executors up), then over ``--idle-window`` seconds the CPU
  and RSS per agent (agent + its executors) and of the scheduler, then round trips and
  throughput (``--tput`` no-op tasks submitted, then gathered; median of ``--rounds``). The
  table gives each throughput as a ratio to the one with the fewest agents. Ray: the same with
  ``Cluster`` nodes (``num_cpus=1`` for two, ``num_cpus=0`` for the rest).

The load average is recorded at the start and the end; timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import _common as c

TAG = "bench_scale"
FULL = {"queued": 1_000_000, "ray_queued": 100_000, "agents": [2, 50, 100],
        "ray_agents": [2, 10], "tput": 20_000, "rounds": 3, "rt": 300, "idle_window": 5.0,
        "budget": 120.0}
QUICK = {"queued": 100_000, "ray_queued": 20_000, "agents": [2, 20, 50], "ray_agents": [2],
         "tput": 10_000, "rounds": 2, "rt": 200, "idle_window": 3.0, "budget": 60.0}


def noop() -> None:
    return None


def _median_s(fn: Any, n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return c.summarize_ns(times)


def _wait(cond: Any, timeout: float, what: str, poll: float = 0.1) -> float:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return time.perf_counter() - t0


def _tree_rss(pid: int) -> int:
    return c.rss(pid) + sum(c.rss(p) for p in c.descendants(pid))


def _tree_cpu(pid: int) -> float:
    return c.cpu_seconds(pid) + sum(c.cpu_seconds(p.pid) for p in c.descendants(pid))


# ---- qsrv from the CLI ---------------------------------------------------------------------------
class QsrvCli:
    """A scheduler and agents as CLI processes; this process is the driver."""

    name = "qsrv"

    def __init__(self) -> None:
        import qsrv

        self.qsrv = qsrv
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agents: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._dir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        self.token = secrets.token_urlsafe(24)
        self.env = {**os.environ, "QSRV_TOKEN": self.token}
        self.env.pop("QSRV_ADDRESS", None)
        # Long heartbeat and handshake timeouts: a hundred agents starting at once on two
        # cores can miss the defaults (5 s, 10 s), and a refused agent exits.
        log = self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                        "--heartbeat-timeout", "60",
                                        "--handshake-timeout", "60"])
        self.scheduler = self.procs[0]
        self.address = ""

        def listening() -> bool:
            if self.scheduler.poll() is not None:
                raise RuntimeError("scheduler died: " + log.read_text(errors="replace")[-2000:])
            for line in log.read_text(errors="replace").splitlines():
                if "listening on " in line:
                    self.address = line.split("listening on ", 1)[1].split()[0]
            return bool(self.address)

        _wait(listening, 60, "the scheduler", 0.05)

    def _start(self, name: str, args: list[str]) -> Path:
        log = self._dir / f"{name}.log"
        self._logs.append(open(log, "wb"))  # noqa: SIM115 -- closed in shutdown
        self.procs.append(subprocess.Popen([sys.executable, "-m", "qsrv", *args],
                                           stdout=self._logs[-1], stderr=subprocess.STDOUT,
                                           env=self.env))
        return log

    def agent(self, name: str, *args: str) -> None:
        self._start(name, ["worker", "--address", self.address, "--name", name,
                           "--reconnect-timeout", "0", *args])
        self.agents.append(self.procs[-1])

    def connect(self) -> None:
        self.qsrv.init(address=self.address, token=self.token)

    def workers(self) -> list[dict[str, Any]]:
        gone = [p.args for p in self.agents if p.poll() is not None]
        if gone:
            raise RuntimeError(f"{len(gone)} agent(s) exited, e.g. {gone[0]}")
        return list(self.qsrv.status().get("workers", []))

    def shutdown(self) -> None:
        try:
            self.qsrv.shutdown()
        finally:
            for proc in reversed(self.procs):
                proc.terminate()
            for proc in reversed(self.procs):
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for f in self._logs:
                f.close()


def qsrv_queued(counts: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    cl = QsrvCli()
    cl.agent("main", "--cpus", "2", "--executors", "2")
    cl.connect()
    qsrv = cl.qsrv
    _wait(lambda: sum(w["executors"] for w in cl.workers()) >= 2, 60, "two executors")
    submit = qsrv.distribute_task(target={"cpu": 1})(noop)
    later = qsrv.distribute_task(target={"cpu": 1, "later": 1})(noop)
    for _ in range(200):
        qsrv.get(submit())
    qsrv.get([submit() for _ in range(2000)])
    gc.collect()
    time.sleep(1.0)
    pids = {"driver": os.getpid(), "scheduler": cl.scheduler.pid}
    before = {k: c.rss(p) for k, p in pids.items()}
    n, budget = counts["queued"], counts["budget"]
    refs = []
    t0 = time.perf_counter()
    for i in range(n):
        refs.append(later())
        if i % 10_000 == 9_999 and time.perf_counter() - t0 > budget:
            break
    submitted = len(refs)
    t_submit = time.perf_counter() - t0

    def held() -> bool:
        t = qsrv.status()["tasks"]
        return int(t["infeasible"] + t["queued"] + t["waiting"]) >= submitted

    _wait(held, max(60.0, budget), "the scheduler to hold every task", 0.25)
    t_ingest = time.perf_counter() - t0
    gc.collect()
    time.sleep(2.0)
    queued_rss = {k: c.rss(p) for k, p in pids.items()}
    rt = _median_s(lambda: qsrv.get(submit()), counts["rt"])
    status = _median_s(qsrv.status, 7)
    # drain: a worker that has `later` joins, every queued task runs
    cl.agent("drain", "--cpus", "2", "--executors", "2", "--resources", "later=1")
    t1 = time.perf_counter()
    values = qsrv.get(refs)
    t_drain = time.perf_counter() - t1
    assert len(values) == submitted
    del refs, values
    gc.collect()
    time.sleep(3.0)
    drained = {k: c.rss(p) for k, p in pids.items()}
    result = {
        "count": submitted, "requested": n, "reduced": submitted < n,
        "submit_s": t_submit, "submit_per_s": submitted / t_submit, "ingest_s": t_ingest,
        "rss_before": before, "rss_queued": queued_rss, "rss_drained": drained,
        "bytes_per_task": {k: (queued_rss[k] - before[k]) / submitted for k in pids},
        "round_trip_meanwhile": rt, "status_latency": status,
        "drain_s": t_drain, "drain_per_s": submitted / t_drain,
    }
    return result, cl.shutdown


def qsrv_agents(counts: dict[str, Any], n: int, idle: str) -> tuple[dict[str, Any], Any]:
    cl = QsrvCli()
    time.sleep(0.5)
    t0 = time.perf_counter()
    for i in range(n):
        if i < 2 or idle == "executors":
            cl.agent(f"a{i}", "--cpus", "1", "--executors", "1")
        else:
            cl.agent(f"a{i}", "--cpus", "0", "--executors", "0")
    cl.connect()
    _wait(lambda: len(ws := cl.workers()) >= n and sum(w["executors"] for w in ws) >= min(
        n, 2 if idle == "nocpu" else n), 600, f"{n} agents", 0.2)
    registered = time.perf_counter() - t0
    return _agents_common(cl, counts, n, registered, [p.pid for p in cl.agents],
                          cl.scheduler.pid, cl.qsrv.distribute_task(target={"cpu": 1})(noop),
                          cl.qsrv.get)


def _agents_common(cl: Any, counts: dict[str, Any], n: int, registered: float,
                   agent_pids: list[int], scheduler_pid: int | None, submit: Any,
                   get: Any) -> tuple[dict[str, Any], Any]:
    time.sleep(2.0)  # let start-up work (probes, imports) finish
    window = counts["idle_window"]
    cpu0 = {p: _tree_cpu(p) for p in agent_pids}
    sched0 = c.cpu_seconds(scheduler_pid) if scheduler_pid else 0.0
    time.sleep(window)
    idle_cpu = [(_tree_cpu(p) - cpu0[p]) / window for p in agent_pids]
    sched_idle = (c.cpu_seconds(scheduler_pid) - sched0) / window if scheduler_pid else None
    rss = [_tree_rss(p) for p in agent_pids]
    for _ in range(200):
        get(submit())
    get([submit() for _ in range(2000)])
    rt = _median_s(lambda: get(submit()), counts["rt"])
    rates, sched_cpu = [], []
    for _ in range(counts["rounds"]):
        gc.collect()
        s0 = c.cpu_seconds(scheduler_pid) if scheduler_pid else 0.0
        t0 = time.perf_counter()
        values = get([submit() for _ in range(counts["tput"])])
        took = time.perf_counter() - t0
        assert len(values) == counts["tput"]
        rates.append(counts["tput"] / took)
        if scheduler_pid:
            sched_cpu.append((c.cpu_seconds(scheduler_pid) - s0) / counts["tput"] * 1e6)
    result = {
        "agents": n, "registration_s": registered,
        "idle_cpu_per_agent_pct": 100 * statistics.fmean(idle_cpu),
        "idle_cpu_all_agents_pct": 100 * sum(idle_cpu),
        "scheduler_idle_cpu_pct": None if sched_idle is None else 100 * sched_idle,
        "rss_per_agent": statistics.fmean(rss), "rss_all_agents": sum(rss),
        "round_trip": rt, "tasks_per_s": statistics.median(rates), "rates": rates,
        "scheduler_cpu_us_per_task": statistics.median(sched_cpu) if sched_cpu else None,
    }
    return result, cl.shutdown


# ---- Ray -----------------------------------------------------------------------------------------
def _ray_cluster(head: dict[str, Any]) -> tuple[Any, Any]:
    import logging

    os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")
    import ray
    from ray import cluster_utils

    cluster = cluster_utils.Cluster(initialize_head=True,
                                    head_node_args={"include_dashboard": False, **head})
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
    return ray, cluster


def _ray_pids() -> dict[str, int]:
    found: dict[str, int] = {}
    for proc in c.descendants():
        try:
            name = proc.name()
        except Exception:
            continue
        if name in ("raylet", "gcs_server") and name not in found:
            found[name] = proc.pid
    return found


def ray_queued(counts: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    ray, cluster = _ray_cluster({"num_cpus": 2})

    def shutdown() -> None:
        ray.shutdown()
        cluster.shutdown()

    submit = ray.remote(num_cpus=1)(noop).remote
    later = ray.remote(num_cpus=1, resources={"later": 1})(noop).remote
    for _ in range(200):
        ray.get(submit())
    ray.get([submit() for _ in range(2000)])
    gc.collect()
    time.sleep(1.0)
    pids = {"driver": os.getpid(), **_ray_pids()}
    before = {k: c.rss(p) for k, p in pids.items()}
    n, budget = min(counts["queued"], counts["ray_queued"]), counts["budget"]
    refs = []
    t0 = time.perf_counter()
    for i in range(n):
        refs.append(later())
        if i % 1000 == 999 and time.perf_counter() - t0 > budget:
            break
    submitted = len(refs)
    t_submit = time.perf_counter() - t0
    gc.collect()
    time.sleep(2.0)
    queued_rss = {k: c.rss(p) for k, p in pids.items()}
    rt = _median_s(lambda: ray.get(submit()), counts["rt"])
    status = _median_s(lambda: (ray.nodes(), ray.available_resources()), 7)
    cluster.add_node(num_cpus=2, resources={"later": 2})
    t1 = time.perf_counter()
    values = ray.get(refs)
    t_drain = time.perf_counter() - t1
    assert len(values) == submitted
    del refs, values
    gc.collect()
    time.sleep(3.0)
    drained = {k: c.rss(p) for k, p in pids.items()}
    result = {
        "count": submitted, "requested": n, "reduced": submitted < n,
        "capped_from": counts["queued"],
        "submit_s": t_submit, "submit_per_s": submitted / t_submit, "ingest_s": None,
        "rss_before": before, "rss_queued": queued_rss, "rss_drained": drained,
        "bytes_per_task": {k: (queued_rss[k] - before[k]) / submitted for k in pids},
        "round_trip_meanwhile": rt, "status_latency": status,
        "status_call": "ray.nodes() + ray.available_resources()",
        "drain_s": t_drain, "drain_per_s": submitted / t_drain,
    }
    return result, shutdown


def ray_agents(counts: dict[str, Any], n: int, idle: str) -> tuple[dict[str, Any], Any]:
    t0 = time.perf_counter()
    ray, cluster = _ray_cluster({"num_cpus": 1})
    nodes = [cluster.head_node]
    for i in range(1, n):
        nodes.append(cluster.add_node(num_cpus=1 if i < 2 or idle == "executors" else 0))
    cluster.wait_for_nodes()
    registered = time.perf_counter() - t0

    def shutdown() -> None:
        ray.shutdown()
        cluster.shutdown()

    raylets = [p.pid for p in c.descendants() if p.name() == "raylet"]
    submit = ray.remote(num_cpus=1)(noop).remote
    result, _ = _agents_common(cluster, counts, n, registered, raylets, None, submit, ray.get)
    result["per_agent_processes"] = "raylet and what it started (workers, agents)"
    return result, shutdown


# ---- in a child process --------------------------------------------------------------------------
def child(spec: str, counts: dict[str, Any], idle: str, out: Path) -> None:
    parts = spec.split(":")
    name, phase = parts[0], parts[1]
    t0 = time.perf_counter()
    if phase == "queued":
        result, shutdown = (qsrv_queued if name == "qsrv" else ray_queued)(counts)
    else:
        result, shutdown = (qsrv_agents if name == "qsrv" else ray_agents)(
            counts, int(parts[2]), idle)
    result["seconds"] = time.perf_counter() - t0
    c.child_done(out, result, shutdown, grace=60)


# ---- the report ----------------------------------------------------------------------------------
def _us(d: Any, key: str = "median_us") -> str:
    v = c.dig(d, key) if isinstance(d, dict) else None
    return c.fmt(v, ",.0f")


def render(res: dict[str, Any]) -> str:
    lines = [
        f"Run {res['date']} on {c.describe(res['machine'])}; mode {res['mode']}, idle agents "
        f"{res['idle']}; load average at start {res['loadavg_start']}, at end "
        f"{res['loadavg_end']}; total {res['seconds']:.0f} s.",
        "",
        "Queued tasks (a target no worker has yet; then a worker that has it joins):",
        "",
        "| system | queued | submit s (tasks/s) | ingest s | bytes/task driver | bytes/task "
        "scheduler side | round trip meanwhile µs (p99) | status µs (max) | drain tasks/s "
        "| RSS after drain vs before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("qsrv", "ray"):
        q = res["systems"].get(name, {}).get("queued")
        if not q:
            continue
        if "error" in q:
            lines.append(f"| {name} | failed: {q['error'][:120]} |||||||||")
            continue
        per = q["bytes_per_task"]
        side = sum(v for k, v in per.items() if k != "driver")
        grown = {k: q["rss_drained"][k] - q["rss_before"][k] for k in q["rss_before"]}
        after = ", ".join(f"{k} {c.fmt_bytes(q['rss_drained'][k])} ({grown[k]:+,} B)"
                          for k in q["rss_before"])
        lines.append(
            f"| {name} | {q['count']:,}{' (reduced)' if q['reduced'] else ''}"
            f"{' (capped)' if q.get('capped_from', q['count']) > q['count'] else ''} "
            f"| {q['submit_s']:.1f} ({q['submit_per_s']:,.0f}) "
            f"| {c.fmt(q['ingest_s'], '.1f')} | {per['driver']:,.0f} | {side:,.0f} "
            f"| {_us(q['round_trip_meanwhile'])} ({_us(q['round_trip_meanwhile'], 'p99_us')}) "
            f"| {_us(q['status_latency'])} ({_us(q['status_latency'], 'p99_us')}) "
            f"| {q['drain_per_s']:,.0f} | {after} |")
    lines += [
        "",
        "Agents (two run tasks; the others idle):",
        "",
        "| system | agents | registration s | idle CPU per agent % | idle CPU all agents % "
        "| scheduler idle CPU % | RSS per agent | round trip µs | throughput tasks/s "
        "| vs fewest agents | scheduler CPU µs/task |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("qsrv", "ray"):
        runs = res["systems"].get(name, {}).get("agents") or {}
        base = None
        for key in sorted(runs, key=int):
            a = runs[key]
            if "error" in a:
                lines.append(f"| {name} | {key} | failed: {a['error'][:120]} ||||||||")
                continue
            base = base or a["tasks_per_s"]
            lines.append(
                f"| {name} | {a['agents']} | {a['registration_s']:.1f} "
                f"| {a['idle_cpu_per_agent_pct']:.2f} | {a['idle_cpu_all_agents_pct']:.1f} "
                f"| {c.fmt(a['scheduler_idle_cpu_pct'], '.2f')} "
                f"| {c.fmt_bytes(a['rss_per_agent'])} | {_us(a['round_trip'])} "
                f"| {a['tasks_per_s']:,.0f} | {a['tasks_per_s'] / base:.2f}x "
                f"| {c.fmt(a['scheduler_cpu_us_per_task'], ',.0f')} |")
    return "\n".join(lines)


# ---- the parent ----------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="qsrv,ray")
    p.add_argument("--phases", default="queued,agents")
    p.add_argument("--queued", type=int)
    p.add_argument("--ray-queued", type=int)
    p.add_argument("--agents", help="comma-separated agent counts")
    p.add_argument("--ray-agents", help="comma-separated agent counts for Ray")
    p.add_argument("--tput", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--idle", choices=("nocpu", "executors"), default="nocpu")
    p.add_argument("--qsrv-root", help="measure the qsrv checkout at this path instead")
    p.add_argument("--write-md", action="store_true")
    p.add_argument("--from-json")
    p.add_argument("--json", help="also write the run's JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--counts", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import json

        child(args.child, json.loads(args.counts), args.idle, Path(args.out))
        return
    if args.from_json:
        print(render(c.load_run(args.from_json)))
        return
    import json

    counts = dict(QUICK if args.quick else FULL)
    for key in ("queued", "ray_queued", "tput", "rounds"):
        if getattr(args, key) is not None:
            counts[key] = getattr(args, key)
    if args.agents:
        counts["agents"] = [int(x) for x in args.agents.split(",")]
    if args.ray_agents:
        counts["ray_agents"] = [int(x) for x in args.ray_agents.split(",")]
    env = c.child_env()
    if args.qsrv_root:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.qsrv_root).resolve()),
                                             env.get("PYTHONPATH", "")])
    res = c.new_run("scale", mode="quick" if args.quick else "full", idle=args.idle,
                    counts=counts, qsrv_root=args.qsrv_root or str(c.ROOT), systems={})
    t0 = time.perf_counter()
    logdir = Path(tempfile.mkdtemp(prefix="bench-scale-logs-"))
    systems = [s for s in args.only.split(",") if s in ("qsrv", "ray")]
    phases = args.phases.split(",")
    for name in systems:
        sysres: dict[str, Any] = res["systems"].setdefault(name, {})
        extra = ["--counts", json.dumps(counts), "--idle", args.idle]
        if "agents" in phases:
            sysres["agents"] = {}
            for n in counts["agents" if name == "qsrv" else "ray_agents"]:
                sysres["agents"][str(n)] = c.run_child(
                    __file__, ["--child", f"{name}:agents:{n}", *extra], f"{name}:agents:{n}",
                    900, logdir, env)
        if "queued" in phases:
            sysres["queued"] = c.run_child(__file__, ["--child", f"{name}:queued", *extra],
                                           f"{name}:queued", 1800, logdir, env)
    res["loadavg_end"] = c.loadavg()
    res["seconds"] = time.perf_counter() - t0
    path = c.save_run(res)
    if args.json:
        c.save_run(res, Path(args.json))
    text = render(res)
    print(text)
    print(f"\nrun saved to {path}; child logs in {logdir}")
    if args.write_md:
        c.publish(res, text, TAG, heading="## Holding up at scale")


if __name__ == "__main__":
    main()
