"""Where qsrv's time goes on the throughput workload: py-spy on every process of the cluster.

    pip install py-spy                  # a dev tool, not a project dependency
    python benchmarks/_profile_tasks.py --gil --workload tput,rt [--seconds 20] [--write-md]

Starts a local cluster (``qsrv.init(num_cpus=2)``), warms it up, then attaches
``py-spy record --nonblocking --threads --format raw`` to the driver (this process), the
scheduler, the worker agent and both executors, while the driver repeats the benchmark's
throughput workload (20,000 no-op tasks submitted at once, then gathered) for ``--seconds``.
py-spy drops samples of threads that are idle (sleeping in epoll/recv), so a process's sample
count over ``rate x seconds`` is its CPU share: "busy" below is that share, per thread where it
matters (the driver's main thread vs its ``qsrv-io`` thread).

The summary lists, per process, the functions where samples *end* (self time) and the
functions that are *on* the stack (inclusive time), as shares of that process's samples.
On a 2-core machine five profilers cost some CPU themselves (``--nonblocking`` keeps them from
pausing the targets); read the shares, not the absolute throughput printed here.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as c
import psutil

TAG = "profile_tasks"
FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


# frames on every stack of a process (entry points, thread bootstrap): left out of "inclusive"
_BOILERPLATE = ("(<frozen runpy>)", "(qsrv/__main__.py)", "(qsrv/cli/__init__.py)",
                "(qsrv/cli/scheduler.py)", "(qsrv/cli/worker.py)", "(asyncio/runners.py)",
                "Thread._bootstrap", "Thread.run (", "(_profile_tasks.py)",
                "<module> (qsrv/worker/_executor.py)", "main (qsrv/worker/_executor.py)",
                "Executor.run_forever")


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path


def parse(raw: str) -> tuple[collections.Counter[str], dict[str, collections.Counter[str]],
                             dict[str, collections.Counter[str]], dict[str, int]]:
    """Per thread name: self counts by function, inclusive counts by function; line counts."""
    selfc: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    incl: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    lines: collections.Counter[str] = collections.Counter()
    totals: dict[str, int] = collections.Counter()
    for row in raw.splitlines():
        stack, _, count_s = row.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = frames[0]
        thread = thread.split(": ", 1)[1] if ": " in thread else thread
        thread = "main" if thread == "MainThread" else thread
        names = []
        for fr in frames[1:]:
            m = FRAME.match(fr)
            if m:
                names.append((f"{m['fn']} ({_short(m['file'])})",
                              f"{_short(m['file'])}:{m['line']} {m['fn']}"))
            else:
                names.append((fr, fr))
        if not names:
            continue
        totals[thread] += count
        selfc[thread][names[-1][0]] += count
        lines[names[-1][1]] += count
        for fn in {n[0] for n in names}:
            if not any(b in fn for b in _BOILERPLATE):
                incl[thread][fn] += count
    return lines, selfc, incl, totals


def summarise(label: str, raw: str, expected: float, top: int) -> str:
    lines, selfc, incl, totals = parse(raw)
    total = sum(totals.values())
    out = [f"**{label}**", ""]
    if not total:
        return "\n".join([*out, "(no samples: idle, or py-spy could not attach)", ""])
    busy = ", ".join(f"{t} {n / expected:.0%}" for t, n in
                     sorted(totals.items(), key=lambda kv: -kv[1]))
    out.append(f"CPU share (samples / expected at 100%): {total / expected:.0%} ({busy})")
    out.append("")
    allself: collections.Counter[str] = collections.Counter()
    allincl: collections.Counter[str] = collections.Counter()
    for t in totals:
        allself.update(selfc[t])
        allincl.update(incl[t])
    out += ["| self % | function | | inclusive % | function |", "|---:|---|---|---:|---|"]
    s_items, i_items = allself.most_common(top), allincl.most_common(top)
    for i in range(max(len(s_items), len(i_items))):
        s = s_items[i] if i < len(s_items) else ("", 0)
        c = i_items[i] if i < len(i_items) else ("", 0)
        out.append(f"| {s[1] / total:.1%} | `{s[0]}` | | {c[1] / total:.1%} | `{c[0]}` |"
                   if s[0] or c[0] else "")
    out += ["", "Hottest lines (self): " + "; ".join(
        f"`{ln}` {n / total:.1%}" for ln, n in lines.most_common(6)), ""]
    return "\n".join(out)


def noop() -> None:
    return None


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds per thread name of a process (threads of one name summed)."""
    out: dict[str, tuple[float, float]] = {}
    names = c.thread_names(pid)
    if pid == os.getpid():  # Python thread names are not the OS's: map them by native id
        names.update({t.native_id: ("main" if t.name == "MainThread" else t.name)
                      for t in threading.enumerate() if t.native_id in names})
    try:
        threads = psutil.Process(pid).threads()
    except psutil.Error:
        return out
    for t in threads:
        name = names.get(t.id, str(t.id))
        pu, ps = out.get(name, (0.0, 0.0))
        out[name] = (pu + t.user_time, ps + t.system_time)
    return out


def cpu_table(procs: dict[str, int], before: dict[str, dict[str, tuple[float, float]]],
              after: dict[str, dict[str, tuple[float, float]]], tasks: int,
              seconds: float) -> str:
    rows = ["| process | thread | user µs/task | system µs/task | CPU share |",
            "|---|---|---:|---:|---:|"]
    for label in procs:
        for thread, (u1, s1) in sorted(after.get(label, {}).items()):
            u0, s0 = before.get(label, {}).get(thread, (0.0, 0.0))
            du, ds = u1 - u0, s1 - s0
            if du + ds < 0.02:
                continue
            rows.append(f"| {label} | {thread} | {du / tasks * 1e6:,.0f} | "
                        f"{ds / tasks * 1e6:,.0f} | {(du + ds) / seconds:.0%} |")
    return "\n".join(rows)


def profile(workload: str, args: argparse.Namespace, pyspy: str, procs: dict[str, int],
            fn: Any, outdir: Path) -> str:
    import qsrv

    load_start = c.loadavg()
    spies = {}
    for label, pid in procs.items():
        path = outdir / f"{workload}_{label.replace(' ', '_')}.txt"
        spies[label] = (path, subprocess.Popen(
            [pyspy, "record", "--pid", str(pid), "--rate", str(args.rate), "--duration",
             str(int(args.seconds)), "--format", "raw", "--threads", "--nonblocking",
             "--output", str(path), *(["--gil"] if args.gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(1.0)  # let every profiler attach
    rates = []
    t_end = time.perf_counter() + args.seconds - 1.5
    cpu0 = {label: thread_cpu(pid) for label, pid in procs.items()}
    t_start = time.perf_counter()
    done = 0
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        if workload == "tput":
            qsrv.get([fn() for _ in range(args.tasks)])
        else:
            for _ in range(200):
                qsrv.get(fn())
        n = args.tasks if workload == "tput" else 200
        done += n
        rates.append(n / (time.perf_counter() - t0))
    t_work = time.perf_counter() - t_start
    cpu1 = {label: thread_cpu(pid) for label, pid in procs.items()}
    errors = []
    for label, (_, spy) in spies.items():
        _, err = spy.communicate(timeout=args.seconds + 30)
        if spy.returncode:
            errors.append(f"{label}: {err.decode(errors='replace')[-300:]}")
    expected = args.rate * args.seconds
    what = (f"{len(rates)} rounds of {args.tasks:,} no-op tasks (submit all, then gather)"
            if workload == "tput" else
            f"{done:,} round trips (one no-op task submitted and awaited at a time)")
    rtxt = (f"{min(rates, default=0):,.0f}-{max(rates, default=0):,.0f} tasks/s"
            if workload == "tput" else
            f"{1e6 / statistics.median(rates) if rates else 0:,.0f} µs per round trip")
    title = "Throughput workload" if workload == "tput" else "Round-trip workload"
    header = [
        f"#### {title}", "",
        f"Profiled {time.strftime('%Y-%m-%d')}: py-spy {args.rate} Hz"
        f"{' --gil' if args.gil else ''} for {args.seconds:g} s on every process while the "
        f"driver ran {what} ({rtxt} under the profilers); load average "
        f"{load_start} at start, {c.loadavg()} at end.", ""]
    body = ["CPU time from /proc/PID/task/TID/stat over the profiled rounds (the ground truth "
            "for how busy each process is; py-spy's shares below say where inside it):", "",
            cpu_table(procs, cpu0, cpu1, done, t_work), ""]
    body += [summarise(f"{label} (pid {procs[label]})", path.read_text() if path.exists()
                       else "", expected, args.top) for label, (path, _) in spies.items()]
    return "\n".join(header + body + [f"py-spy errors: {e}" for e in errors])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--workload", default="tput",
                    help="comma-separated, run in turn: tput: --tasks submitted at once then "
                         "gathered (default); rt: one task submitted and awaited, repeatedly")
    ap.add_argument("--gil", action="store_true",
                    help="sample only the thread holding the GIL (py-spy --gil)")
    ap.add_argument("--keep", help="directory to keep the raw py-spy output in")
    ap.add_argument("--write-md", action="store_true", help="update benchmarks/README.md")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        sys.exit("py-spy is not installed: pip install py-spy")

    import qsrv

    qsrv.init(num_cpus=2)
    fn = qsrv.distribute_task(target={"cpu": 1})(noop)
    qsrv.get([fn() for _ in range(2000)])
    procs = {"driver": os.getpid()}
    for proc in c.descendants():
        args_ = c.cmdline(proc)
        if args_[1:4] == ["-m", "qsrv", "scheduler"]:
            procs["scheduler"] = proc.pid
        elif args_[1:4] == ["-m", "qsrv", "worker"]:
            procs["worker agent"] = proc.pid
        elif args_[1:3] == ["-m", "qsrv.worker._executor"]:
            procs[f"executor {sum(k.startswith('executor') for k in procs) + 1}"] = proc.pid
    outdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qsrv_profile_"))
    outdir.mkdir(parents=True, exist_ok=True)
    texts = [profile(workload, args, pyspy, procs, fn, outdir)
             for workload in args.workload.split(",")]
    qsrv.shutdown()
    text = "\n".join(texts)
    print(text)
    print(f"\nraw py-spy output in {outdir}")
    if args.write_md:
        c.splice_md(text, TAG)


if __name__ == "__main__":
    main()
