"""A quantum session's per-job overhead, against a plain qsrv task and Aer itself, in one run.

    python benchmarks/bench_session.py            # ~1 minute on 2 cores
    python benchmarks/bench_session.py --quick    # fewer repetitions, a smoke run

Started here: an embedded local cluster (``qsrv.init(num_cpus=3)``: a scheduler, one worker
agent) with this process as its driver, and a gateway in a thread of this process joined to
that cluster (its quantum service uses this process's driver). Measured, each after a warm-up:

1. **Aer directly**: ``engines.execute`` of a 1-shot 2-qubit Bell circuit (OpenQASM 2) in
   this process, seeded: what the job itself costs.
2. **Plain task**: the same call as a qsrv task (``distribute_task``), submitted and awaited
   (``qsrv.get``) from the driver: a task round trip plus the job.
3. **Task in a reservation**: the same task inside a reservation (``qsrv.reserve``) that this
   driver holds: what a session job costs on the cluster's side.
4. **Session job**: the same job submitted to a running session through the quantum service
   (``submit`` -> ``wait_job`` -> ``result``, called on the gateway's event loop as a door
   calls them): stored, run in order inside the session's reservation, its result stored, the
   waiter woken.

The four run interleaved, one of each per round, so that the machine's load (shared, noisy)
weighs on them alike. Then a **variational loop** of 200 steps: each step's angle derived
from the previous step's counts; once as jobs added one at a time to an open batch (add,
wait, read the result), once as plain tasks. Target of the issue: a session job <= 2x the
plain task's round trip.
Results: printed, and written to ``results/runs/session-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import qsrv
from qsrv.client import connected
from qsrv.gateway import GatewayConfig, GatewayServer, add_user
from qsrv.gateway._quantum import JobSpec, SessionStatus
from qsrv.quantum import engines

HERE = Path(__file__).resolve().parent
RUNS = HERE / "results" / "runs"
PLATFORM = "aer.statevector.cpu"
BELL = ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\n'
        'cx q[0],q[1];\nmeasure q -> c;\n')


def execute(kind: str, data: str, shots: int, variables: dict[str, Any],
            seed: int) -> dict[str, int]:
    """The plain task: what a session job runs, without the service."""
    from qsrv.quantum import engines

    result = engines.execute(engines.Program(kind, data), shots, variables,
                             platform="aer.statevector.cpu", seed=seed)
    return dict(result.counts)


class Gateway:
    """A gateway served by an event loop in a thread of this process."""

    def __init__(self, config: GatewayConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = GatewayServer(config)
        self.call(self.server.start())

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def rotation() -> engines.Program:
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter

    qc = QuantumCircuit(1, 1)
    qc.ry(Parameter("theta"), 0)
    qc.measure(0, 0)
    return engines.program_from(qc)


def next_theta(theta: float, counts: dict[str, int], shots: int) -> float:
    return theta + 0.05 * (0.5 - counts.get("1", 0) / shots)


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": statistics.median(ordered) * 1e3,
            "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1e3,
            "n": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 30 if args.quick else 200
    steps = 40 if args.quick else 200

    info = qsrv.init(num_cpus=3)  # a reservation, a session, and plain tasks
    driver = connected().driver
    assert driver is not None
    token = driver.token
    data = Path(tempfile.mkdtemp(prefix="qsrv-bench-session-")) / "data"
    add_user(data, "bench")
    gateway = Gateway(GatewayConfig(data_dir=data, port=0,
                                    cluster_address=info["address"], cluster_token=token))
    service = gateway.server.service
    quantum = service.quantum

    async def user() -> Any:
        return service.store.user_by_name("bench")

    bench = gateway.call(user())
    bell = engines.Program("qiskit.qasm2", BELL)
    out: dict[str, Any] = {"workload": "session", "started": time.time(),
                           "reps": reps, "steps": steps}

    # 1-3, interleaved (one of each per round: the machine's load drifts alike for all).
    task = qsrv.distribute_task(execute)
    reservation = qsrv.reserve({"cpu": 1}, name="bench")
    reservation.wait(120)
    in_reservation = task.options(reservation=reservation)

    async def open_session() -> tuple[str, float]:
        t0 = time.perf_counter()
        session, _ = await quantum.open_session(bench, PLATFORM, max_duration="1h",
                                                max_idle_duration="30m")
        await quantum.wait_session(bench, session.id, 120, statuses=[SessionStatus.RUNNING])
        return session.id, time.perf_counter() - t0

    async def session_job(session_id: str, seed: int) -> float:
        t0 = time.perf_counter()
        job = await quantum.submit(bench, session_id, JobSpec(1, {}, bell, seed=seed))
        await quantum.wait_job(bench, job.id, 60)
        quantum.result(bench, job.id)
        return time.perf_counter() - t0

    session_id, started = gateway.call(open_session(), timeout=300)
    out["session_start_ms"] = started * 1e3
    samples: dict[str, list[float]] = {"aer_direct": [], "plain_task": [],
                                       "reserved_task": [], "session_job": []}
    for i in range(5 + reps):
        t0 = time.perf_counter()
        engines.execute(bell, 1, {}, platform=PLATFORM, seed=i)
        t1 = time.perf_counter()
        qsrv.get(task(bell.kind, bell.data, 1, {}, i))
        t2 = time.perf_counter()
        qsrv.get(in_reservation(bell.kind, bell.data, 1, {}, i))
        t3 = time.perf_counter()
        job_s = gateway.call(session_job(session_id, i))
        if i >= 5:  # after a warm-up
            samples["aer_direct"].append(t1 - t0)
            samples["plain_task"].append(t2 - t1)
            samples["reserved_task"].append(t3 - t2)
            samples["session_job"].append(job_s)
    for key, values in samples.items():
        out[key] = stats(values)
    gateway.call(quantum.terminate_session(bench, session_id))
    reservation.release()

    # 4. A variational loop: open batch vs plain tasks.
    program = rotation()
    shots = 100

    async def batch_loop() -> tuple[float, float]:
        t0 = time.perf_counter()
        theta = 0.3
        batch = await quantum.create_batch(bench, program, [JobSpec(shots, {"theta": theta},
                                                                    seed=0)],
                                           platform=PLATFORM, open=True)
        job_id = batch.jobs[0].id
        for step in range(steps):
            await quantum.wait_job(bench, job_id, 60)
            theta = next_theta(theta, quantum.result(bench, job_id).counts, shots)
            if step == steps - 1:
                break
            batch = await quantum.add_jobs(bench, batch.id,
                                           [JobSpec(shots, {"theta": theta}, seed=step + 1)])
            job_id = batch.jobs[-1].id
        await quantum.close_batch(bench, batch.id)
        await quantum.wait_batch(bench, batch.id, 60)
        return time.perf_counter() - t0, theta

    loop_wall, loop_theta = gateway.call(batch_loop(), timeout=900)
    t0 = time.perf_counter()
    theta = 0.3
    for step in range(steps):
        counts = qsrv.get(task(program.kind, program.data, shots, {"theta": theta}, step))
        theta = next_theta(theta, counts, shots)
    plain_wall = time.perf_counter() - t0
    out["loop"] = {"open_batch_s": loop_wall, "plain_tasks_s": plain_wall,
                   "ratio": loop_wall / plain_wall, "theta_batch": loop_theta,
                   "theta_plain": theta}
    out["session_over_plain"] = out["session_job"]["median_ms"] / out["plain_task"]["median_ms"]
    gateway.stop()
    qsrv.shutdown()

    print(f"per job (1-shot 2-qubit Bell circuit, median of {reps}):")
    for key, label in (("aer_direct", "Aer directly (engines.execute)"),
                       ("plain_task", "plain qsrv task round trip"),
                       ("reserved_task", "task in a reservation, round trip"),
                       ("session_job", "session job submitted -> result")):
        s = out[key]
        print(f"  {label:36s} {s['median_ms']:8.2f} ms   (p90 {s['p90_ms']:.2f} ms)")
    print(f"  session job / plain task            {out['session_over_plain']:8.2f} x   "
          "(target <= 2)")
    print(f"  session start (reservation ready)   {out['session_start_ms']:8.1f} ms")
    loop = out["loop"]
    print(f"variational loop of {steps} steps ({shots} shots each):")
    print(f"  open batch                           {loop['open_batch_s']:8.2f} s")
    print(f"  plain tasks                          {loop['plain_tasks_s']:8.2f} s")
    print(f"  ratio                                {loop['ratio']:8.2f} x   "
          f"(same angle: {abs(loop['theta_batch'] - loop['theta_plain']) < 1e-12})")
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / f"session-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
