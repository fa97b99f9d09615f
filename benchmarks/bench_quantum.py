"""200 random 12-qubit depth-8 circuits, 1,000 shots each, over 2 workers: qsrv vs Ray vs Dask.

    python benchmarks/bench_quantum.py            # all systems, table, README section
    python benchmarks/bench_quantum.py --quick    # 40 circuits, one repetition (a smoke run)

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
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SECTION = "## Quantum: 200 circuits over 2 workers"
WORKERS = 2
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


def timed(run: Callable[[], list[dict[str, int]]], reps: int) -> tuple[float, list[Any]]:
    best, out = float("inf"), []
    for _ in range(reps):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


# ---- one system per subprocess -------------------------------------------------------------
def run_serial(circuits: list[Any], chunks: list[int], reps: int) -> dict[str, Any]:
    simulate(circuits[:1], [0])  # warm
    seconds, out = timed(lambda: simulate(circuits, list(range(len(circuits)))), reps)
    return {"seconds": seconds, "by_chunk": {}, "digest": digest(out)}


def run_qsrv(circuits: list[Any], chunks: list[int], reps: int) -> dict[str, Any]:
    import qsrv

    qsrv.init(num_cpus=WORKERS)
    task = qsrv.distribute_task(target={"cpu": 1})(simulate)
    pids = set(qsrv.get([qsrv.distribute_task(warm)(i) for i in range(4 * WORKERS)]))
    by_chunk = {}
    out: list[Any] = []
    for per in chunks:
        parts = chunked(circuits, per)
        by_chunk[per], out = timed(lambda parts=parts: flatten(
            qsrv.get([task(c, s) for c, s in parts])), reps)
    qsrv.shutdown()
    return {"by_chunk": by_chunk, "executors_warmed": len(pids), "digest": digest(out)}


def run_ray(circuits: list[Any], chunks: list[int], reps: int) -> dict[str, Any]:
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=1)(simulate)
    pids = set(ray.get([ray.remote(num_cpus=1)(warm).remote(i) for i in range(4 * WORKERS)]))
    by_chunk = {}
    out: list[Any] = []
    for per in chunks:
        parts = chunked(circuits, per)
        by_chunk[per], out = timed(lambda parts=parts: flatten(
            ray.get([task.remote(c, s) for c, s in parts])), reps)
    ray.shutdown()
    return {"by_chunk": by_chunk, "executors_warmed": len(pids), "digest": digest(out)}


def run_dask(circuits: list[Any], chunks: list[int], reps: int) -> dict[str, Any]:
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    pids = set(client.gather(client.map(warm, range(4 * WORKERS), pure=False)))
    by_chunk = {}
    out: list[Any] = []
    for per in chunks:
        parts = chunked(circuits, per)
        by_chunk[per], out = timed(lambda parts=parts: flatten(client.gather(
            [client.submit(simulate, c, s, pure=False) for c, s in parts])), reps)
    client.close()
    cluster.close()
    return {"by_chunk": by_chunk, "executors_warmed": len(pids), "digest": digest(out)}


def digest(results: list[dict[str, int]]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()[:16]


SYSTEMS = {"serial": run_serial, "qsrv": run_qsrv, "ray": run_ray, "dask": run_dask}


def child(system: str, count: int, chunks: list[int], reps: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    circuits = make_circuits(count)
    result = SYSTEMS[system](circuits, chunks, reps)
    if result["by_chunk"]:
        best = min(result["by_chunk"], key=result["by_chunk"].get)
        result.update(seconds=result["by_chunk"][best], best_chunk=best)
    print("RESULT " + json.dumps(result))


# ---- the parent ----------------------------------------------------------------------------
def spawn(system: str, count: int, chunks: list[int], reps: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", system, "--circuits",
           str(count), "--reps", str(reps), "--chunks", ",".join(map(str, chunks))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    env.pop("QSRV_ADDRESS", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            data: dict[str, Any] = json.loads(line[len("RESULT "):])
            return data
    raise RuntimeError(f"{system} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def render(results: dict[str, dict[str, Any]], count: int, chunks: list[int]) -> str:
    serial = results["serial"]["seconds"]
    lines = [SECTION, "",
             f"{count} random 12-qubit depth-8 circuits (`qiskit.circuit.random.random_circuit`,"
             f" seeds 1000+i), {SHOTS} shots each; every task transpiles (optimization level 0)"
             " and runs on `AerSimulator(max_parallel_threads=1)` with a seed per circuit."
             f" {WORKERS} workers: qsrv `init(num_cpus=2)`, Ray `init(num_cpus=2)`, Dask"
             " `LocalCluster(n_workers=2, threads_per_worker=1)`; the serial baseline runs the"
             " same function in one process, also one Aer thread. Each system in its own"
             " subprocess, executors warmed first; best of the repetitions, and the best of"
             f" circuits-per-task chunk sizes {chunks} for each system. Same counts everywhere"
             " (digest).",
             "", "| system | seconds | circuits/task | speedup | parallel efficiency | "
             "by chunk size (s) | digest |", "|---|---|---|---|---|---|---|"]
    for name in ("serial", "qsrv", "ray", "dask"):
        r = results[name]
        speedup = serial / r["seconds"]
        eff = speedup / (1 if name == "serial" else WORKERS)
        by = ", ".join(f"{k}: {v:.2f}" for k, v in r["by_chunk"].items()) or "-"
        lines.append(f"| {name} | {r['seconds']:.2f} | {r.get('best_chunk', '-')} | "
                     f"{speedup:.2f}x | {eff:.2f} | {by} | {r['digest']} |")
    q, ray, dask = (results[n]["seconds"] for n in ("qsrv", "ray", "dask"))
    lines += ["", f"qsrv vs Ray: {ray / q:.2f}x faster; vs Dask: {dask / q:.2f}x faster. "
              f"Machine: {os.cpu_count()} cores (shared; timings are noisy)."]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    readme = HERE / "README.md"
    old = readme.read_text() if readme.exists() else ""
    if SECTION in old:  # a previous run's section: replace it, keep the sections after it
        start = old.index(SECTION)
        after = old.find("\n## ", start + len(SECTION))
        tail = "\n" + old[after + 1:] if after >= 0 else ""
        readme.write_text(old[:start] + text + tail)
        return
    head = old + ("\n" if old and not old.endswith("\n") else "") + ("\n" if old else "")
    readme.write_text(head + text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=sorted(SYSTEMS))
    parser.add_argument("--circuits", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunks", default="1,5,10,25")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    if args.child:
        child(args.child, args.circuits, chunks, args.reps)
        return
    if args.quick:
        args.circuits, args.reps = 40, 1
    results = {}
    for system in ("serial", "qsrv", "ray", "dask"):
        results[system] = spawn(system, args.circuits, chunks, args.reps)
        print(f"{system}: {results[system]['seconds']:.2f} s", flush=True)
    digests = {r["digest"] for r in results.values()}
    if len(digests) != 1:
        raise SystemExit(f"systems disagree on the counts: {results}")
    text = render(results, args.circuits, chunks)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "quantum.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_readme and not args.quick:
        write_section(text)


if __name__ == "__main__":
    main()
