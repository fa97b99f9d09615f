"""Time to first result: a fresh ``python -c`` that connects, runs one task and shuts down.

    python benchmarks/bench_startup.py               # 7 rounds (~2-3 min on 2 cores)
    python benchmarks/bench_startup.py --repeat 3    # fewer rounds
    python benchmarks/bench_startup.py --only qsrv-embedded,qsrv-join
    python benchmarks/bench_startup.py --write-md    # also update benchmarks/README.md
    python benchmarks/bench_startup.py --from-json benchmarks/results/startup.json

Cases, each a new Python process whose script imports the system, starts or joins a cluster
with two worker slots, submits a function defined in the script (``x + 1``), waits for its
result, then shuts down:

* ``qsrv-embedded``: ``qsrv.init()`` starts an embedded cluster (scheduler, worker agent,
  executor) and ``qsrv.shutdown()`` stops it;
* ``qsrv-join``: ``qsrv.init()`` joins the cluster ``qsrv start --cpus 2`` keeps running
  (started once, before the rounds; ``qsrv stop`` after); ``shutdown()`` only disconnects;
* ``ray``: ``ray.init(num_cpus=2)`` (dashboard off), ``ray.shutdown()``;
* ``dask``: ``Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True))``,
  ``client.close(); cluster.close()``.

The clock starts just before the parent spawns the process. "First result" is when the script
has the task's value; "exit" is when the process has ended (shutdown and interpreter exit
included). The scripts also stamp the end of their imports, of init and of shutdown. Rounds
run the cases in turn, so that a noisy neighbour hits all of them; the table gives the median
and the best of the rounds. The qsrv cases run with a private ``XDG_RUNTIME_DIR``: no other
process on the machine can join the cluster ``qsrv start`` runs here. Timings are reported,
never asserted; the load average is recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import _common as c

TAG = "bench_startup"
CASES = ("qsrv-embedded", "qsrv-join", "ray", "dask")

_STAMP = "import json as _j, time as _t\n_s = {'begin': _t.time()}\n"
_PRINT = "print('STAMPS ' + _j.dumps(_s), flush=True)\n"
SCRIPTS = {
    "qsrv": """
        import qsrv
        _s["import"] = _t.time()

        @qsrv.distribute_task
        def inc(x):
            return x + 1

        info = qsrv.init()
        _s["init"] = _t.time()
        assert qsrv.get(inc(1)) == 2
        _s["first"] = _t.time()
        qsrv.shutdown()
        _s["shutdown"] = _t.time()
        _s["joined"] = bool(info.get("shared"))
    """,
    "ray": """
        import logging
        import ray
        _s["import"] = _t.time()

        @ray.remote
        def inc(x):
            return x + 1

        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
        _s["init"] = _t.time()
        assert ray.get(inc.remote(1)) == 2
        _s["first"] = _t.time()
        ray.shutdown()
        _s["shutdown"] = _t.time()
    """,
    "dask": """
        from dask.distributed import Client, LocalCluster
        _s["import"] = _t.time()

        def inc(x):
            return x + 1

        if __name__ == "__main__":
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
            _s["init"] = _t.time()
            assert client.submit(inc, 1, pure=False).result() == 2
            _s["first"] = _t.time()
            client.close()
            cluster.close()
            _s["shutdown"] = _t.time()
    """,
}


def _script(system: str) -> str:
    body = textwrap.dedent(SCRIPTS[system])
    if system == "dask":  # its worker processes re-import the main module: print once
        return _STAMP + body + "    " + _PRINT
    return _STAMP + body + _PRINT


def run_case(case: str, env: dict[str, str], timeout: float = 180.0) -> dict[str, Any]:
    """One fresh process of ``case``; times in seconds from just before the spawn."""
    system = case.split("-")[0]
    path = Path(tempfile.mkdtemp(prefix="bench_startup_")) / f"{system}_first_result.py"
    path.write_text(_script(system))  # a file: Dask's worker processes import the main module
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(path)], env=env, cwd=path.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        c.kill([*c.descendants(proc.pid)])
        proc.kill()
        out, err = proc.communicate()
    ended = time.time()
    stamps = next((json.loads(line[len("STAMPS "):]) for line in out.splitlines()
                   if line.startswith("STAMPS ")), None)
    if proc.returncode != 0 or stamps is None:
        tail = (err or out).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)[:300]}"}
    rel = {k: v - t0 for k, v in stamps.items() if isinstance(v, float)}
    return {"python_start": rel["begin"], "import": stamps["import"] - stamps["begin"],
            "init": stamps["init"] - stamps["import"], "task": stamps["first"] - stamps["init"],
            "shutdown": stamps["shutdown"] - stamps["first"], "first_result": rel["first"],
            "exit": ended - t0, "joined": stamps.get("joined", False),
            "log_first_line": (err.strip().splitlines() or [""])[0][:200]}


def _qsrv_cli(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "qsrv", *args], env=env, capture_output=True,
                         text=True, timeout=180)
    return time.perf_counter() - t0, out


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [s for s in samples if "error" not in s]
    out: dict[str, Any] = {"rounds": len(samples), "failed": len(samples) - len(ok)}
    if not ok:
        out["error"] = samples[0].get("error") if samples else "no rounds"
        return out
    for key in ("python_start", "import", "init", "task", "shutdown", "first_result", "exit"):
        values = [s[key] for s in ok]
        out[key] = {"median": statistics.median(values), "best": min(values)}
    out["joined"] = all(s["joined"] for s in ok)
    out["log_first_line"] = ok[0]["log_first_line"]
    return out


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [f"Machine: {c.describe(m)}. Load average {res['loadavg_start']} at the start, "
             f"{res.get('loadavg_end', '?')} at the end; {res['repeat']} rounds.", ""]
    if "qsrv_start_s" in res:
        lines.append(f"`qsrv start --cpus 2` took {res['qsrv_start_s']:.2f} s (once, before "
                     f"the rounds); `qsrv stop` {res.get('qsrv_stop_s', 0):.2f} s.")
        lines.append("")
    lines += ["| case | first result, median (best) | process ended | import | init | "
              "task | shutdown |", "|---|---:|---:|---:|---:|---:|---:|"]

    def cell(fig: dict[str, Any], key: str, best: bool = False) -> str:
        v = fig.get(key)
        if not isinstance(v, dict):
            return "—"
        return (f"{c.fmt_ms(v['median'])} ms ({c.fmt_ms(v['best'])})" if best
                else f"{c.fmt_ms(v['median'])} ms")

    for case in CASES:
        fig = res["cases"].get(case)
        if fig is None:
            continue
        if "error" in fig:
            lines.append(f"| {case} | failed: {fig['error'][:80]} | | | | | |")
            continue
        lines.append(f"| {case} | {cell(fig, 'first_result', True)} | {cell(fig, 'exit')} | "
                     f"{cell(fig, 'import')} | {cell(fig, 'init')} | {cell(fig, 'task')} | "
                     f"{cell(fig, 'shutdown')} |")
    first = {k: c.dig(res["cases"], k, "first_result", "median") for k in CASES}
    lines += ["", "| ratio of first result | value | target |", "|---|---:|---|",
              f"| qsrv embedded / Ray | {c.ratio(first['qsrv-embedded'], first['ray'])} | |",
              f"| qsrv embedded / Dask | {c.ratio(first['qsrv-embedded'], first['dask'])} | |",
              f"| qsrv joining / Ray | {c.ratio(first['qsrv-join'], first['ray'])} | |",
              f"| qsrv joining / Dask | {c.ratio(first['qsrv-join'], first['dask'])} | |",
              f"| qsrv embedded, seconds | {c.fmt(first['qsrv-embedded'], '.2f')} | ≤ 1 s |",
              f"| qsrv joining `qsrv start`, seconds | {c.fmt(first['qsrv-join'], '.2f')} "
              f"| ≤ 0.5 s |"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--only", default=",".join(CASES),
                    help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--write-md", action="store_true",
                    help="replace the results block in benchmarks/README.md")
    ap.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    ap.add_argument("--from-json", metavar="PATH",
                    help="print (and with --write-md, paste) the table of a saved run; no run")
    args = ap.parse_args()
    if args.from_json:
        res = c.load_run(args.from_json)
        print(render(res))
        if args.write_md:
            c.publish(res, render(res), TAG, heading="## Time to first result")
        return
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = set(only) - set(CASES)
    if bad:
        ap.error(f"unknown case(s) {sorted(bad)}")

    res = c.new_run("startup", repeat=args.repeat, cases={})
    print(f"load average {res['loadavg_start']}; {args.repeat} rounds of {', '.join(only)}")
    samples: dict[str, list[dict[str, Any]]] = {case: [] for case in only}
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        # Private runtime directories: one with nothing in it (embedded), one for `qsrv start`.
        alone, shared = Path(tmp) / "alone", Path(tmp) / "shared"
        for d in (alone, shared):
            d.mkdir(mode=0o700)
        envs = {"qsrv-embedded": c.child_env(XDG_RUNTIME_DIR=str(alone)),
                "qsrv-join": c.child_env(XDG_RUNTIME_DIR=str(shared)),
                "ray": c.child_env(RAY_SCHEDULER_EVENTS="0"), "dask": c.child_env()}
        if "qsrv-join" in only:
            took, out = _qsrv_cli(envs["qsrv-join"], "start", "--cpus", "2")
            if out.returncode != 0:
                raise SystemExit(f"qsrv start failed: {out.stderr}")
            res["qsrv_start_s"] = took
        try:
            for round_no in range(args.repeat):
                for case in only:
                    sample = run_case(case, envs[case])
                    samples[case].append(sample)
                    shown = ("FAILED " + sample["error"] if "error" in sample
                             else f"first result {sample['first_result']:.3f} s, exit "
                                  f"{sample['exit']:.3f} s")
                    print(f"  round {round_no + 1} {case:<14} {shown}", flush=True)
        finally:
            if "qsrv-join" in only:
                res["qsrv_stop_s"], _ = _qsrv_cli(envs["qsrv-join"], "stop")
    res["cases"] = {case: summarize(s) for case, s in samples.items()}
    res["samples"] = samples
    res["loadavg_end"] = c.loadavg()
    table = render(res)
    print()
    print(table)
    print(f"\nwrote {c.save_run(res, args.json)}")
    if args.write_md:
        c.publish(res, table, TAG, heading="## Time to first result")


if __name__ == "__main__":
    os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")
    main()
