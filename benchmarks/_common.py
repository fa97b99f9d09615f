"""What every benchmark shares: the machine's description, medians and ratios, formatting,
process trees (psutil), running one measurement per child process, and writing results.

Results: every run writes one JSON file, ``results/runs/<workload>-<YYYYmmdd-HHMMSS>.json``
(not committed). ``--write-md`` renders the markdown from that JSON, pastes it between the
workload's markers in README.md (or NATIVE.md) and copies the JSON to
``results/<workload>.json``, the one file the pasted block comes from (committed with it).
``--from-json PATH`` renders a saved run again without measuring anything.

The machine's own limits (memcpy, loopback TCP bandwidth and round trip) are measured by
``_machine.py``; the systems are started and driven by ``_qsrv.py``, ``_ray.py`` and
``_dask.py``, which all offer the calls of `Cluster`.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
RUNS = RESULTS / "runs"
README = HERE / "README.md"
WORKERS = 2  # worker slots every system gets
GB = 1e9  # GB/s are 10^9 bytes per second


# ---- the systems ---------------------------------------------------------------------------
class Cluster(Protocol):
    """A running system with blocking calls; the cases of every workload are written once
    against these. ``task`` wraps a function defined in the entry script (``__main__``, so
    that every system ships it by value) and returns ``submit(*args) -> ref``."""

    name: str
    setup: str  # one sentence: what was started

    def task(self, fn: Callable[..., Any], *, resources: dict[str, float] | None = None,
             node: str | None = None) -> Callable[..., Any]: ...
    def get(self, ref: Any) -> Any: ...
    def gather(self, refs: list[Any]) -> list[Any]: ...
    def put(self, value: Any) -> Any: ...
    def ready(self, ref: Any) -> None:
        """Wait until the ref's value exists somewhere, without fetching it."""
    def queued(self) -> int | None:
        """How many tasks wait in the scheduler, or None where that cannot be asked."""
    def server_pids(self) -> dict[str, int]:
        """The scheduler-side processes, counted with the driver for memory."""
    def role(self, proc: psutil.Process) -> str:
        """What a process of this system is, for CPU accounting."""
    def shutdown(self) -> None: ...


SYSTEMS = ("qsrv", "ray", "dask")


def start(name: str, *, nodes: bool = False, **options: Any) -> Cluster:
    """A local cluster of `name` with `WORKERS` slots; with ``nodes``, two single-slot nodes
    with their own object stores, which `Cluster.task(..., node="a"|"b")` pins to."""
    module = importlib.import_module(f"_{name}")
    cluster: Cluster = (module.Nodes if nodes else module.Local)(**options)
    return cluster


# ---- the machine ---------------------------------------------------------------------------
def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(modules: Iterable[str] = ("qsrv", "numpy", "ray", "distributed", "uvloop")
            ) -> dict[str, Any]:
    """Cores, CPU model, memory, kernel, package versions and the git state of qsrv/."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for mod in modules:
        try:
            versions[mod] = version(mod)
        except PackageNotFoundError:
            versions[mod] = "not installed"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                              capture_output=True, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../qsrv"], cwd=HERE,
                               text=True, capture_output=True, timeout=10).stdout.split("\n")
        modified = sorted(line[3:] for line in dirty if line.strip())
    except (OSError, subprocess.SubprocessError):
        head, modified = "?", []
    return {"nproc": os.cpu_count(), "cpu": model or platform.machine(),
            "kernel": platform.release(), "memory_bytes": psutil.virtual_memory().total,
            "versions": versions, "git": head, "qsrv_modified": modified}


def describe(m: dict[str, Any]) -> str:
    """The machine line every report starts with."""
    mem = f", {fmt_bytes(m['memory_bytes'])}" if "memory_bytes" in m else ""
    changed = m.get("qsrv_modified") or []
    dirty = (f" + uncommitted changes to {', '.join(changed)}" if 0 < len(changed) <= 5 else
             f" + uncommitted changes to {len(changed)} files under qsrv/" if changed else "")
    return (f"{m['nproc']} x {m['cpu']} (kernel {m['kernel']}{mem}); "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
            + f"; qsrv at {m.get('git', '?')}{dirty}")


def new_run(workload: str, **fields: Any) -> dict[str, Any]:
    """The fields every result file starts with."""
    return {"workload": workload,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(), "loadavg_start": loadavg(), **fields}


# ---- statistics ----------------------------------------------------------------------------
def summarize_ns(samples_ns: list[int]) -> dict[str, float]:
    """Median, p99 and mean in µs of per-call times in nanoseconds."""
    us = sorted(s / 1000 for s in samples_ns)
    return {"n": len(us), "median_us": statistics.median(us),
            "p99_us": us[min(len(us) - 1, round(0.99 * (len(us) - 1)))],
            "mean_us": statistics.fmean(us)}


def median_time(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median seconds of `repeat` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Fewest seconds of `repeat` calls, and what the last call returned."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def dig(d: Any, *path: str) -> Any:
    """d[path[0]][path[1]]..., or None where a step is missing."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each number found in every one of `runs` (nested dicts alike): how a limit
    measured at the start and at the end of a run is pooled."""
    runs = [r for r in runs if r and "error" not in r]
    out: dict[str, Any] = {}
    for key in runs[0] if runs else ():
        values = [r.get(key) for r in runs]
        if all(isinstance(v, dict) for v in values):
            out[key] = mean_of(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = statistics.fmean(values)
    return out


def ratio(a: float | None, b: float | None) -> str:
    """a / b as "0.25x"; "—" when either is missing."""
    if a is None or b is None:
        return "—"
    if a <= 0 or b <= 0:
        return "n/a (a time within noise)"
    return f"{a / b:.2f}x"


# ---- formatting ----------------------------------------------------------------------------
def fmt(x: Any, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def fmt_bytes(n: float) -> str:
    """A byte count in binary units: 781 B, 1.5 KiB, 256 MiB, 15.6 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            break
        n /= 1024
    return f"{n:,.0f} {unit}" if unit == "B" or n == int(n) else f"{n:,.1f} {unit}"


def fmt_ms(s: float | None) -> str:
    """Seconds as milliseconds with a sensible number of digits."""
    if s is None:
        return "n/a"
    ms = s * 1e3
    return f"{ms:,.0f}" if abs(ms) >= 100 else f"{ms:.1f}" if abs(ms) >= 1 else f"{ms:.3f}"


def fmt_gbps(nbytes: float, s: float | None) -> str:
    if s is None:
        return "n/a"
    if s <= 0:
        return "n/a (within noise)"
    return f"{nbytes / s / GB:.2f}"


# ---- processes -----------------------------------------------------------------------------
def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every process below `pid` (default: this one), children of children included."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def rss(proc: psutil.Process | int) -> int:
    """Resident set size in bytes (VmRSS), 0 if the process is gone."""
    try:
        p = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        return int(p.memory_info().rss)
    except psutil.Error:
        return 0


def cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all threads, from the on-CPU nanoseconds of
    /proc/PID/task/*/schedstat: exact, where psutil's cpu_times() counts 10 ms ticks, which
    is too coarse for a few hundred µs per task. Falls back to psutil."""
    total, found = 0, False
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
                    found = True
            except (OSError, ValueError, IndexError):
                pass
    if found:
        return total / 1e9
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def thread_names(pid: int) -> dict[int, str]:
    """Thread id -> the kernel's name of that thread (psutil does not report names)."""
    out: dict[int, str] = {}
    try:
        tids = [t.id for t in psutil.Process(pid).threads()]
    except psutil.Error:
        return out
    for tid in tids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/comm") as f:
            out[tid] = f.read().strip()
    return out


def kill(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL the given processes (ones this benchmark started), ignoring those gone."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


# ---- one measurement per child process -----------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    """The environment of a measuring child: qsrv importable from this checkout, no address of
    another cluster to join."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("QSRV_ADDRESS", None)
    env.pop("QSRV_TOKEN", None)
    return env


def run_child(script: str | Path, args: list[str], label: str, timeout: float, logdir: Path,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python SCRIPT ARGS --out JSON`` in its own session, wait up to `timeout`, then kill
    whatever is left of that session (what the child started: raylets, CLI processes). Returns
    the JSON the child wrote plus ``wall_s``, or {"error", "log_tail", "wall_s"}."""
    name = label.replace(":", "-").replace(" ", "_")
    out, log = logdir / f"{name}.json", logdir / f"{name}.log"
    print(f"  {label:<16}", end=" ", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as logf:
        proc = subprocess.Popen([sys.executable, str(script), *args, "--out", str(out)],
                                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=HERE, env=env or child_env())
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    took = time.perf_counter() - t0
    if out.exists():
        print(f"{took:6.1f} s", flush=True)
        result: dict[str, Any] = json.loads(out.read_text())
        result["wall_s"] = took
        return result
    tail = log.read_text(errors="replace")[-3000:]
    why = "timed out" if took >= timeout else f"exit {proc.returncode}"
    print(f"FAILED after {took:.1f} s ({why}); log tail:\n{tail}", flush=True)
    last = [line for line in tail.splitlines() if line.strip()][-1:] or [why]
    return {"error": f"{why}: {last[0][:200]}", "log_tail": tail, "wall_s": took}


def child_done(out: Path, result: dict[str, Any], shutdown: Callable[[], None] | None = None,
               grace: float = 30.0) -> None:
    """End a measuring child: write its result, shut the system down in at most `grace`
    seconds (Ray with 100,000 pending tasks can take minutes), kill what it started, exit."""
    out.write_text(json.dumps(result, indent=1))
    kids = descendants()
    if shutdown is not None:
        t = threading.Thread(target=shutdown, daemon=True)
        t.start()
        t.join(grace)
    kill(kids)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---- results and reports -------------------------------------------------------------------
def save_run(result: dict[str, Any], path: Path | None = None) -> Path:
    """Write a run's JSON: to `path`, or ``results/runs/<workload>-<time>.json``."""
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RUNS / f"{result['workload']}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def load_run(path: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def markers(tag: str) -> tuple[str, str]:
    return f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"


def splice_md(text: str, tag: str, md: Path = README, heading: str = "") -> None:
    """Put `text` between the `tag` markers of `md`; without markers, append them (under
    `heading`) at the end."""
    begin, end = markers(tag)
    block = f"{begin}\n{text.rstrip()}\n{end}"
    old = md.read_text() if md.exists() else ""
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + (f"{heading}\n\n" if heading else "")
        new += block + "\n"
    md.write_text(new)


def publish(result: dict[str, Any], text: str, tag: str, md: Path = README,
            heading: str = "") -> None:
    """``--write-md``: paste `text` into `md` and keep the JSON it came from as
    ``results/<workload>.json``."""
    source = save_run(result, RESULTS / f"{result['workload']}.json")
    splice_md(text, tag, md, heading)
    print(f"updated {md.name}; its block comes from {source.relative_to(HERE)}")
