"""Task round trip, throughput and memory per queued task: qsrv vs Ray vs Dask vs the machine.

    python benchmarks/bench_tasks.py                 # full run (~5-8 min on 2 cores)
    python benchmarks/bench_tasks.py --quick         # smaller counts (~2 min)
    python benchmarks/bench_tasks.py --only qsrv,baseline
    python benchmarks/bench_tasks.py --write-md      # also update benchmarks/README.md

Every system gets two worker slots: qsrv ``init(num_cpus=2)`` (one worker agent, 2 executors),
Ray ``init(num_cpus=2)``, Dask ``LocalCluster(n_workers=2, threads_per_worker=1,
processes=True)``. Each measurement below runs in a fresh subprocess per system (this file run
with ``--child SYSTEM:PHASE``), so no system's memory or threads pollute another's; the parent
collects their JSON, prints a table with the ratios and writes benchmarks/results/tasks.json.

* ``latency`` phase: (1) round trip: one no-op task submitted and awaited, ``--rt`` times after
  a warm-up; median and p99 of the per-call wall time. (2) throughput: ``--tput`` no-op tasks
  submitted at once, then all gathered; tasks/s over submit + gather (submit rate alone too).
* ``memory`` phase: (3) ``--mem`` tasks that wait on a resource nobody has (qsrv
  ``target={"cpu": 1, "nothing": 1}``, Ray ``resources={"nothing": 1}``, Dask
  ``submit(..., resources={"nothing": 1})`` with workers that do not declare it). The figure is
  the RSS growth (VmRSS from /proc/PID/status, before the first submission -> after all are
  queued and RSS has settled) of the *driver + scheduler* processes, divided by the count:
    - qsrv: the driver and its child ``python -m qsrv scheduler ...`` (found by scanning
      /proc/*/stat for processes whose parent is the driver and whose /proc/PID/cmdline is
      ``... -m qsrv scheduler``; the worker agent and executors are reported apart);
    - Ray: the driver, ``raylet`` and ``gcs_server`` (descendants of the driver, by
      /proc/PID/comm); Ray queues pending tasks in the driver's core worker;
    - Dask: the client process alone: LocalCluster runs the scheduler (and the nannies) in the
      client's process, so "client + scheduler" is one RSS.
  Submission is capped by ``--mem-budget`` seconds; if a system cannot submit the full count in
  that time, the count it reached is used and reported (``count`` in the table).
* (4) the machine's own limit: a process-to-process loopback TCP ping-pong of 64-byte messages
  (``_pingpong.py``: blocking sockets, uvloop protocols on both ends, Unix domain sockets, and a
  4-hop relay chain shaped like a task round trip), measured at the start and at the end of the
  run; the table shows the mean of the two medians (and of the two p99s).

The load average (/proc/loadavg) is recorded at the start and the end: these machines are
shared, and a high load explains a noisy figure. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tasks.json"
README = HERE / "README.md"
BEGIN, END = "<!-- bench_tasks:begin -->", "<!-- bench_tasks:end -->"
SYSTEMS = ("qsrv", "ray", "dask")

FULL = {"rt": 1000, "rt_warmup": 200, "tput": 20_000, "mem": 100_000, "mem_budget": 60.0,
        "pingpong": 5000}
QUICK = {"rt": 300, "rt_warmup": 50, "tput": 5000, "mem": 20_000, "mem_budget": 15.0,
         "pingpong": 2000}


# ---- /proc helpers ---------------------------------------------------------------------------
def rss(pid: int) -> int:
    """Resident set size of `pid` in bytes (VmRSS), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _ppids() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            out[int(name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, parent in _ppids().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all threads: the on-CPU nanoseconds of /proc/PID/task/*/schedstat
    (exact, unlike the 10 ms ticks of /proc/PID/stat, which is the fallback)."""
    total, found = 0, False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
                found = True
        except (OSError, ValueError, IndexError):
            pass
    if found:
        return total / 1e9
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def thread_names(pid: int) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out[int(tid)] = f.read().strip()
        except OSError:
            pass
    return out


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def stats_us(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000 for s in samples_ns)
    return {"n": len(us), "median_us": statistics.median(us),
            "p99_us": us[min(len(us) - 1, round(0.99 * (len(us) - 1)))],
            "mean_us": statistics.fmean(us)}


def noop() -> None:
    return None


# ---- one system in this process ------------------------------------------------------------
class System:
    """Start a cluster with two worker slots; submit, await and gather no-op tasks."""

    name = ""

    def submit(self) -> Any: ...
    def wait_one(self, ref: Any) -> Any: ...
    def gather(self, refs: list[Any]) -> Any: ...
    def submit_blocked(self) -> Any: ...
    def queued(self) -> int | None:
        """How many blocked tasks the scheduler holds, or None where that cannot be asked."""
        return None
    def server_pids(self) -> dict[str, int]:
        """The scheduler-side processes counted with the driver for memory."""
        return {}
    def role(self, pid: int) -> str:
        """What a process of this system is, for CPU accounting."""
        return comm(pid) or "?"

    def shutdown(self) -> None: ...


class Qsrv(System):
    name = "qsrv"

    def __init__(self) -> None:
        import qsrv

        self.qsrv = qsrv
        qsrv.init(num_cpus=2)
        self.fn = qsrv.distribute_task(target={"cpu": 1})(noop)
        self.blocked = qsrv.distribute_task(target={"cpu": 1, "nothing": 1})(noop)

    def submit(self) -> Any:
        return self.fn()

    def wait_one(self, ref: Any) -> Any:
        return self.qsrv.get(ref)

    def gather(self, refs: list[Any]) -> Any:
        return self.qsrv.get(refs)

    def submit_blocked(self) -> Any:
        return self.blocked()

    def queued(self) -> int | None:
        counts = self.qsrv.status()["tasks"]
        return int(counts["infeasible"] + counts["queued"] + counts["waiting"])

    def server_pids(self) -> dict[str, int]:
        # The local cluster's scheduler is the driver's child running `python -m qsrv scheduler`.
        for pid in descendants(os.getpid()):
            args = cmdline(pid)
            if args[1:4] == ["-m", "qsrv", "scheduler"]:
                return {"scheduler": pid}
        raise RuntimeError("no `qsrv scheduler` child process found")

    def role(self, pid: int) -> str:
        args = cmdline(pid)[1:4]
        if args[:2] == ["-m", "qsrv"]:
            return {"scheduler": "scheduler", "worker": "worker agent"}.get(args[2], args[2])
        if args[:2] == ["-m", "qsrv.worker._executor"]:
            return "executors"
        return comm(pid) or "?"

    def shutdown(self) -> None:
        self.qsrv.shutdown()


class Ray(System):
    name = "ray"

    def __init__(self) -> None:
        os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")
        import ray

        self.ray = ray
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
        self.fn = ray.remote(noop)
        self.blocked = ray.remote(resources={"nothing": 1})(noop)

    def submit(self) -> Any:
        return self.fn.remote()

    def wait_one(self, ref: Any) -> Any:
        return self.ray.get(ref)

    def gather(self, refs: list[Any]) -> Any:
        return self.ray.get(refs)

    def submit_blocked(self) -> Any:
        return self.blocked.remote()

    def server_pids(self) -> dict[str, int]:
        found = {}
        for pid in descendants(os.getpid()):
            name = comm(pid)
            if name in ("raylet", "gcs_server"):
                found[name] = pid
        if set(found) != {"raylet", "gcs_server"}:
            raise RuntimeError(f"raylet/gcs_server not found among the driver's children: {found}")
        return found

    def role(self, pid: int) -> str:
        name = comm(pid)
        if name in ("raylet", "gcs_server"):
            return name
        if name.startswith("ray::") and "Agent" not in name:
            return "workers"
        return "other (agents, monitors)"

    def shutdown(self) -> None:
        self.ray.shutdown()


class Dask(System):
    name = "dask"

    def __init__(self) -> None:
        from distributed import Client, LocalCluster

        new_cluster: Any = LocalCluster  # untyped
        new_client: Any = Client

        self.cluster: Any = new_cluster(n_workers=2, threads_per_worker=1, processes=True,
                                    dashboard_address=None)
        self.client: Any = new_client(self.cluster)
        # the scheduler lives in this process: its memory is the client's RSS
        assert self.cluster.scheduler is not None

    def submit(self) -> Any:
        return self.client.submit(noop, pure=False)

    def wait_one(self, ref: Any) -> Any:
        return ref.result()

    def gather(self, refs: list[Any]) -> Any:
        return self.client.gather(refs)

    def submit_blocked(self) -> Any:
        return self.client.submit(noop, pure=False, resources={"nothing": 1})

    def queued(self) -> int | None:
        return len(self.cluster.scheduler.unrunnable)  # tasks in state "no-worker"

    def role(self, pid: int) -> str:
        args = cmdline(pid)
        if "from multiprocessing" in " ".join(args) and "spawn_main" in " ".join(args):
            return "workers"
        return "other (resource tracker)"

    def shutdown(self) -> None:
        self.client.close(timeout=20)
        self.cluster.close(timeout=20)


def _start(name: str) -> System:
    return {"qsrv": Qsrv, "ray": Ray, "dask": Dask}[name]()


def _cpu_by_role(procs: dict[int, str], before: dict[int, float], n: int) -> dict[str, float]:
    cpu: dict[str, float] = {}
    for p, role in procs.items():
        cpu[role] = cpu.get(role, 0.0) + (cpu_seconds(p) - before[p]) / n * 1e6
    return cpu


def phase_latency(sys_: System, counts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    clock = time.perf_counter_ns
    for _ in range(counts["rt_warmup"]):
        sys_.wait_one(sys_.submit())
    sys_.gather([sys_.submit() for _ in range(max(100, counts["tput"] // 10))])
    gc.collect()
    me = os.getpid()
    procs = {me: "driver", **{p: sys_.role(p) for p in descendants(me)}}
    cpu0 = {p: cpu_seconds(p) for p in procs}
    samples = []
    for _ in range(counts["rt"]):
        start = clock()
        sys_.wait_one(sys_.submit())
        samples.append(clock() - start)
    out["round_trip"] = stats_us(samples)
    out["round_trip"]["cpu_us_per_task"] = _cpu_by_role(procs, cpu0, counts["rt"])

    n = counts["tput"]
    gc.collect()
    cpu0 = {p: cpu_seconds(p) for p in procs}
    t0 = time.perf_counter()
    refs = [sys_.submit() for _ in range(n)]
    t1 = time.perf_counter()
    values = sys_.gather(refs)
    t2 = time.perf_counter()
    cpu = _cpu_by_role(procs, cpu0, n)
    assert len(values) == n and values[0] is None
    out["throughput"] = {"n": n, "tasks_per_s": n / (t2 - t0), "submit_per_s": n / (t1 - t0),
                         "seconds": t2 - t0, "cpu_us_per_task": cpu,
                         "cpu_us_per_task_total": sum(cpu.values())}
    del refs, values
    return out


def phase_memory(sys_: System, counts: dict[str, Any]) -> dict[str, Any]:
    # warm up the submit path and every process, then let dropped refs be released
    sys_.gather([sys_.submit() for _ in range(200)])
    gc.collect()
    time.sleep(1.0)
    servers = sys_.server_pids()
    me = os.getpid()
    counted = {"driver": me, **servers}
    others = [p for p in descendants(me) if p not in servers.values()]
    before = {k: rss(p) for k, p in counted.items()}
    others_before = sum(rss(p) for p in others)

    n, budget = counts["mem"], counts["mem_budget"]
    refs = []
    t0 = time.perf_counter()
    deadline = t0 + budget
    for i in range(n):
        refs.append(sys_.submit_blocked())
        if i % 1000 == 999 and time.perf_counter() > deadline:
            break
    submitted = len(refs)
    t_submit = time.perf_counter() - t0
    # wait until the scheduler holds all of them (where it can be asked), then for RSS to settle
    waited_for_queue = None
    if sys_.queued() is not None:
        limit = time.perf_counter() + max(30.0, budget)
        while time.perf_counter() < limit:
            q = sys_.queued()
            if q is not None and q >= submitted:
                break
            time.sleep(0.2)
        waited_for_queue = sys_.queued()
    t_queued = time.perf_counter() - t0
    last, stable, settle_start = -1, 0, time.perf_counter()
    while time.perf_counter() - settle_start < 20 and stable < 3:
        time.sleep(0.5)
        gc.collect()
        total = sum(rss(p) for p in counted.values())
        stable = stable + 1 if last > 0 and abs(total - last) < 0.002 * last else 0
        last = total
    after = {k: rss(p) for k, p in counted.items()}
    others_after = sum(rss(p) for p in others)
    growth = sum(after.values()) - sum(before.values())
    result = {
        "count": submitted, "requested": n, "reduced": submitted < n,
        "submit_seconds": t_submit, "queued_seconds": t_queued,
        "scheduler_queue": waited_for_queue,
        "pids": counted,
        "rss_before": before, "rss_after": after,
        "growth_bytes": growth,
        "bytes_per_task": growth / submitted,
        "per_process_bytes_per_task": {k: (after[k] - before[k]) / submitted for k in counted},
        "others_bytes_per_task": (others_after - others_before) / submitted,
    }
    del refs
    return result


def child_main(spec: str, counts: dict[str, Any], out_path: str) -> None:
    name, phase = spec.split(":")
    if name == "baseline":
        sys.path.insert(0, str(HERE))
        import _pingpong

        res = {f: _pingpong.pingpong(f, counts["pingpong"]) for f in _pingpong.FLAVOURS}
        Path(out_path).write_text(json.dumps(res))
        return
    t0 = time.perf_counter()
    sys_ = _start(name)
    result: dict[str, Any] = {"startup_seconds": time.perf_counter() - t0}
    run = phase_latency if phase == "latency" else phase_memory
    result.update(run(sys_, counts))
    Path(out_path).write_text(json.dumps(result))
    # Shut down; whatever the system leaves after 30 s (e.g. Ray with 100k pending tasks) is
    # ended by pid: these are processes this child started.
    kids = descendants(os.getpid())
    t = threading.Thread(target=sys_.shutdown, daemon=True)
    t.start()
    t.join(30)
    for pid in kids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---- parent ----------------------------------------------------------------------------------
def run_child(spec: str, counts: dict[str, Any], timeout: float, logdir: Path) -> dict[str, Any]:
    out = logdir / (spec.replace(":", "-") + ".json")
    log = logdir / (spec.replace(":", "-") + ".log")
    print(f"  {spec:<16}", end=" ", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", spec, "--counts", json.dumps(counts),
             "--out", str(out)],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, cwd=HERE)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: what it started
            proc.wait()
    took = time.perf_counter() - t0
    if out.exists():
        print(f"{took:6.1f} s")
        result: dict[str, Any] = json.loads(out.read_text())
        result["wall_seconds"] = took
        return result
    tail = log.read_text(errors="replace")[-2000:]
    print(f"FAILED after {took:.1f} s (exit {proc.returncode}); log tail:\n{tail}")
    return {"error": f"exit {proc.returncode}", "log_tail": tail, "wall_seconds": took}


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for mod in ("qsrv", "ray", "distributed", "uvloop"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = "not installed"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../qsrv"], cwd=HERE,
                               text=True, capture_output=True, timeout=10).stdout.split("\n")
        modified = sorted(line[3:] for line in dirty if line.strip())
    except (OSError, subprocess.SubprocessError):
        head, modified = "?", []
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "versions": versions, "git": head, "qsrv_modified": modified}


def _pool_pingpong(start: dict[str, Any] | None, end: dict[str, Any] | None) -> dict[str, Any]:
    """The mean of the start and end medians (and p99s), per flavour."""
    runs = [r for r in (start, end) if r and "error" not in r]
    pooled = {}
    for flavour in ("raw", "uvloop", "relay", "unix"):
        if not all(flavour in r for r in runs):
            continue
        meds = [r[flavour]["median_us"] for r in runs]
        p99s = [r[flavour]["p99_us"] for r in runs]
        pooled[flavour] = {"median_us": statistics.fmean(meds), "p99_us": statistics.fmean(p99s),
                           "medians_us": meds}
    return pooled


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _fmt(x: Any, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _ratio(a: Any, b: Any) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def render(results: dict[str, Any]) -> str:
    sysres = results["systems"]
    pp = results.get("pingpong", {})
    lines = [
        f"Run {results['date']} on {results['machine']['nproc']} x {results['machine']['cpu']} "
        f"(kernel {results['machine']['kernel']}); "
        + ", ".join(f"{k} {v}" for k, v in results["machine"]["versions"].items())
        + f"; qsrv at {results['machine'].get('git', '?')}"
        + (f" + uncommitted changes to {', '.join(results['machine']['qsrv_modified'])}"
           if results["machine"].get("qsrv_modified") else "")
        + f"; mode {results['mode']}; load average at start {results['loadavg_start']}, "
        f"at end {results['loadavg_end']}; total {results['seconds']:.0f} s.",
        "",
        "| system | round trip median µs | p99 µs | throughput tasks/s | submit only tasks/s "
        "| bytes per queued task (driver+scheduler) | queued count | startup s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in SYSTEMS:
        if name not in sysres:
            continue
        lat, mem = sysres[name].get("latency", {}), sysres[name].get("memory", {})
        count = _get(mem, "count")
        cnt = "—" if count is None else (f"{count:,}" + (" (reduced)" if mem.get("reduced")
                                                           else ""))
        lines.append(
            f"| {name} | {_fmt(_get(lat, 'round_trip', 'median_us'), ',.0f')} "
            f"| {_fmt(_get(lat, 'round_trip', 'p99_us'), ',.0f')} "
            f"| {_fmt(_get(lat, 'throughput', 'tasks_per_s'), ',.0f')} "
            f"| {_fmt(_get(lat, 'throughput', 'submit_per_s'), ',.0f')} "
            f"| {_fmt(_get(mem, 'bytes_per_task'), ',.0f')} | {cnt} "
            f"| {_fmt(_get(lat, 'startup_seconds'), '.1f')} |")
    for flavour, label in (("raw", "ping-pong, blocking sockets (2 hops)"),
                           ("uvloop", "ping-pong, uvloop both ends (2 hops)"),
                           ("unix", "ping-pong, blocking Unix domain sockets (2 hops)"),
                           ("relay", "relay chain, client→relay→echo→relay→client (4 hops)")):
        if flavour in pp:
            lines.append(f"| {label} | {pp[flavour]['median_us']:,.0f} "
                         f"| {pp[flavour]['p99_us']:,.0f} | | | | | |")
    lines += ["", "Memory per queued task, by process (bytes per task):", ""]
    for name in SYSTEMS:
        mem = _get(sysres, name, "memory")
        if mem and "per_process_bytes_per_task" in mem:
            parts = ", ".join(f"{k} {v:,.0f}" for k, v in mem["per_process_bytes_per_task"].items())
            lines.append(f"- {name}: {parts}; other processes (not counted) "
                         f"{mem['others_bytes_per_task']:,.0f}; submitting took "
                         f"{mem['submit_seconds']:.1f} s, queued after "
                         f"{mem['queued_seconds']:.1f} s")
    lines += ["", "CPU time per task, by process (µs on a CPU per task, summed over the "
              "process's threads from /proc/PID/task/*/schedstat):", ""]
    for what, key in (("round trips", "round_trip"), ("throughput run", "throughput")):
        for name in SYSTEMS:
            cpu = _get(sysres, name, "latency", key, "cpu_us_per_task")
            if cpu:
                parts = ", ".join(f"{k} {v:,.0f}" for k, v in
                                  sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.5)
                lines.append(f"- {name}, {what}: total {sum(cpu.values()):,.0f} = {parts}")
    q = {n: sysres.get(n, {}) for n in SYSTEMS}

    def fig(name: str, *path: str) -> Any:
        return _get(q[name], *path)

    rt = ("latency", "round_trip", "median_us")
    tp = ("latency", "throughput", "tasks_per_s")
    mb = ("memory", "bytes_per_task")
    lines += [
        "",
        "| ratio | value | target |",
        "|---|---:|---|",
        f"| round trip, qsrv / Ray | {_ratio(fig('qsrv', *rt), fig('ray', *rt))} | ≤ 0.20x |",
        f"| round trip, qsrv / Dask | {_ratio(fig('qsrv', *rt), fig('dask', *rt))} | |",
        f"| round trip, qsrv / ping-pong (blocking) | "
        f"{_ratio(fig('qsrv', *rt), _get(pp, 'raw', 'median_us'))} | ≤ 4x |",
        f"| round trip, qsrv / ping-pong (uvloop) | "
        f"{_ratio(fig('qsrv', *rt), _get(pp, 'uvloop', 'median_us'))} | |",
        f"| round trip, qsrv / 4-hop relay chain | "
        f"{_ratio(fig('qsrv', *rt), _get(pp, 'relay', 'median_us'))} | |",
        f"| throughput, qsrv / Ray | {_ratio(fig('qsrv', *tp), fig('ray', *tp))} | ≥ 5x |",
        f"| throughput, qsrv / Dask | {_ratio(fig('qsrv', *tp), fig('dask', *tp))} | |",
        f"| memory per queued task, qsrv / Ray | {_ratio(fig('qsrv', *mb), fig('ray', *mb))} "
        f"| qsrv ≤ 1,024 B |",
        f"| memory per queued task, qsrv / Dask | "
        f"{_ratio(fig('qsrv', *mb), fig('dask', *mb))} | |",
    ]
    return "\n".join(lines)


def write_md(table: str) -> None:
    block = f"{BEGIN}\n{table}\n{END}"
    text = README.read_text() if README.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        heading = "## Task round trip, throughput and memory\n\n"
        text += ("\n" if text else "") + heading + block + "\n"
    README.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (~2 min)")
    ap.add_argument("--only", default="qsrv,ray,dask,baseline",
                    help="comma-separated subset of qsrv,ray,dask,baseline")
    ap.add_argument("--write-md", action="store_true",
                    help="replace the results block in benchmarks/README.md")
    ap.add_argument("--rt", type=int, help="round trips (default 1000, quick 300)")
    ap.add_argument("--tput", type=int, help="tasks for throughput (default 20000, quick 5000)")
    ap.add_argument("--mem", type=int, help="queued tasks for memory (default 100000)")
    ap.add_argument("--mem-budget", type=float, help="seconds allowed to submit them (60)")
    ap.add_argument("--from-json", metavar="PATH",
                    help="print (and with --write-md, paste) the table of a saved run; no run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--counts", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child, json.loads(args.counts), args.out)
        return
    if args.from_json:
        table = render(json.loads(Path(args.from_json).read_text()))
        print(table)
        if args.write_md:
            write_md(table)
        return

    counts: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for key in ("rt", "tput", "mem", "mem_budget"):
        if getattr(args, key) is not None:
            counts[key] = getattr(args, key)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = set(only) - {*SYSTEMS, "baseline"}
    if bad:
        ap.error(f"unknown system(s) {sorted(bad)}")

    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full", "counts": counts, "machine": machine(),
        "loadavg_start": loadavg(), "systems": {},
    }
    print(f"load average {results['loadavg_start']}; counts {counts}")
    t0 = time.perf_counter()
    limit = 240.0 if not args.quick else 90.0
    with tempfile.TemporaryDirectory(prefix="bench_tasks_") as tmp:
        logdir = Path(tmp)
        pp_start = pp_end = None
        if "baseline" in only:
            pp_start = run_child("baseline:start", counts, 60, logdir)
        for name in SYSTEMS:
            if name in only:
                results["systems"][name] = {
                    "latency": run_child(f"{name}:latency", counts, limit, logdir),
                    "memory": run_child(f"{name}:memory", counts, limit, logdir),
                }
        if "baseline" in only:
            pp_end = run_child("baseline:end", counts, 60, logdir)
            results["pingpong_runs"] = {"start": pp_start, "end": pp_end}
            results["pingpong"] = _pool_pingpong(pp_start, pp_end)
    results["loadavg_end"] = loadavg()
    results["seconds"] = time.perf_counter() - t0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    table = render(results)
    print()
    print(table)
    print(f"\nwrote {RESULTS}")
    if args.write_md:
        write_md(table)
        print(f"updated {README}")


if __name__ == "__main__":
    main()
