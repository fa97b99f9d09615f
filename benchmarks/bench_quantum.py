"""200 random 12-qubit depth-8 circuits, 1,000 shots each, over 2 workers: qsrv vs Ray vs Dask.

    python benchmarks/bench_quantum.py               # all systems (~10 min on 2 cores)
    python benchmarks/bench_quantum.py --quick       # 40 circuits, one repetition (a smoke run)
    python benchmarks/bench_quantum.py --write-md    # also update benchmarks/README.md

Every system runs the same task function (transpile for AerSimulator, run 1,000 shots with a
seed per circuit, return the counts) in its own subprocess, with Aer pinned to one thread per
task (``max_parallel_threads=1``) everywhere, the serial baseline included. Workers are warmed
(qiskit-aer imported, one circuit run in every executor) before timing. Each system is timed
with several circuits-per-task chunk sizes; its best is reported. Speedup = serial time /
parallel time; parallel efficiency = speedup / 2.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

TAG = "bench_quantum"
SHOTS = 1000


def make_circuits(count: int) -> list[Any]:
    from qiskit.circuit.random import random_circuit

    return [random_circuit(12, 8, measure=True, seed=1000 + i) for i in range(count)]


def simulate(circuits: list[Any], seeds: list[int]) -> list[dict[str, int]]:
    """The task: transpile and run each circuit on a one-thread AerSimulator."""
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    sim = AerSimulator(max_parallel_threads=1)
    out = []
    for circuit, seed in zip(circuits, seeds, strict=True):
        compiled = transpile(circuit, sim, optimization_level=0)
        counts = sim.run(compiled, shots=SHOTS, seed_simulator=seed).result().get_counts()
        out.append(dict(counts))
    return out


def warm(_: int) -> int:
    """Import qiskit-aer and run one circuit in this executor; hold it a moment so that the
    warm-up tasks spread over every executor."""
    simulate(make_circuits(1), [0])
    time.sleep(0.3)
    return os.getpid()


def chunked(circuits: list[Any], per: int) -> list[tuple[list[Any], list[int]]]:
    return [(circuits[i:i + per], list(range(i, min(i + per, len(circuits)))))
            for i in range(0, len(circuits), per)]


def flatten(results: list[list[dict[str, int]]]) -> list[dict[str, int]]:
    return [counts for chunk in results for counts in chunk]


# ---- one system per child process -------------------------------------------------------------
def run_serial(circuits: list[Any], chunks: list[int], reps: int) -> dict[str, Any]:
    simulate(circuits[:1], [0])  # warm
    seconds, out = c.best_time(lambda: simulate(circuits, list(range(len(circuits)))), reps)
    return {"seconds": seconds, "by_chunk": {}, "digest": digest(out)}


def run_system(cl: c.Cluster, circuits: list[Any], chunks: list[int],
               reps: int) -> dict[str, Any]:
    task = cl.task(simulate)
    pids = set(cl.gather([cl.task(warm)(i) for i in range(4 * c.WORKERS)]))
    by_chunk = {}
    out: list[Any] = []
    for per in chunks:
        parts = chunked(circuits, per)
        by_chunk[per], out = c.best_time(lambda parts=parts: flatten(
            cl.gather([task(cs, seeds) for cs, seeds in parts])), reps)
    best = min(by_chunk, key=lambda k: by_chunk[k])
    return {"by_chunk": by_chunk, "seconds": by_chunk[best], "best_chunk": best,
            "executors_warmed": len(pids), "digest": digest(out), "setup": cl.setup}


def digest(results: list[dict[str, int]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()[:16]


def child(system: str, count: int, chunks: list[int], reps: int, out: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    circuits = make_circuits(count)
    if system == "serial":
        c.child_done(out, run_serial(circuits, chunks, reps))  # exits
    cl = c.start(system)
    c.child_done(out, run_system(cl, circuits, chunks, reps), cl.shutdown)


# ---- the report ------------------------------------------------------------------------------
def render(res: dict[str, Any]) -> str:
    results, count, chunks = res["systems"], res["circuits"], res["chunks"]
    serial = results["serial"]["seconds"]
    lines = [f"Run {res['date']} on {c.describe(res['machine'])}; load average at start "
             f"{res['loadavg_start']}, at end {res['loadavg_end']}.", "",
             f"{count} random 12-qubit depth-8 circuits (`qiskit.circuit.random.random_circuit`,"
             f" seeds 1000+i), {SHOTS} shots each; every task transpiles (optimization level 0)"
             " and runs on `AerSimulator(max_parallel_threads=1)` with a seed per circuit."
             f" {c.WORKERS} workers: qsrv `init(num_cpus=2)`, Ray `init(num_cpus=2)`, Dask"
             " `LocalCluster(n_workers=2, threads_per_worker=1)`; the serial baseline runs the"
             " same function in one process, also one Aer thread. Each system in its own"
             " subprocess, executors warmed first; best of the repetitions, and the best of"
             f" circuits-per-task chunk sizes {chunks} for each system. Same counts everywhere"
             " (digest).",
             "", "| system | seconds | circuits/task | speedup | parallel efficiency | "
             "by chunk size (s) | digest |", "|---|---|---|---|---|---|---|"]
    for name in ("serial", *c.SYSTEMS):
        r = results[name]
        speedup = serial / r["seconds"]
        eff = speedup / (1 if name == "serial" else c.WORKERS)
        by = ", ".join(f"{k}: {v:.2f}" for k, v in r["by_chunk"].items()) or "-"
        lines.append(f"| {name} | {r['seconds']:.2f} | {r.get('best_chunk', '-')} | "
                     f"{speedup:.2f}x | {eff:.2f} | {by} | {r['digest']} |")
    q, ray, dask = (results[n]["seconds"] for n in c.SYSTEMS)
    lines += ["", f"qsrv vs Ray: {ray / q:.2f}x faster; vs Dask: {dask / q:.2f}x faster. "
              f"Machine: {res['machine']['nproc']} cores (shared; timings are noisy)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuits", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunks", default="1,5,10,25")
    parser.add_argument("--quick", action="store_true", help="40 circuits, one repetition")
    parser.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    parser.add_argument("--write-md", action="store_true",
                        help="replace the results block in benchmarks/README.md")
    parser.add_argument("--from-json", metavar="PATH",
                        help="print (and with --write-md, paste) the table of a saved run")
    parser.add_argument("--child", choices=("serial", *c.SYSTEMS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    chunks = [int(x) for x in args.chunks.split(",")]
    if args.child:
        child(args.child, args.circuits, chunks, args.reps, args.out)
        return
    if args.from_json:
        res = c.load_run(args.from_json)
        print(render(res))
        if args.write_md:
            c.publish(res, render(res), TAG)
        return
    if args.quick:
        args.circuits, args.reps = 40, 1
    res = c.new_run("quantum", circuits=args.circuits, reps=args.reps, chunks=chunks,
                    systems={})
    env = c.child_env(OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0")
    with tempfile.TemporaryDirectory(prefix="bench-quantum-") as tmp:
        for system in ("serial", *c.SYSTEMS):
            r = c.run_child(__file__, ["--child", system, "--circuits", str(args.circuits),
                                       "--reps", str(args.reps), "--chunks", args.chunks],
                            system, 1200, Path(tmp), env)
            if "error" in r:
                raise SystemExit(f"{system} failed: {r['error']}")
            res["systems"][system] = r
    res["loadavg_end"] = c.loadavg()
    digests = {r["digest"] for r in res["systems"].values()}
    if len(digests) != 1:
        raise SystemExit(f"systems disagree on the counts: {res['systems']}")
    text = render(res)
    print(text)
    print(f"wrote {c.save_run(res, args.json)}")
    if args.write_md:
        c.publish(res, text, TAG)


if __name__ == "__main__":
    main()
