"""Large objects: moving state vectors (2^24 complex128 = 256 MiB) with qsrv, Ray and Dask,
against the machine's own limits measured in the same run.

    python benchmarks/bench_objects.py               # 2^24, ~2.5 minutes on 2 cores
    python benchmarks/bench_objects.py --quick       # 2^20 (16 MiB), under a minute
    python benchmarks/bench_objects.py --qubits 22 --repeat 5 --only baseline,qsrv
    python benchmarks/bench_objects.py --json /tmp/objects.json

Every phase runs in a fresh subprocess (this file with ``--child PHASE``, in its own session so
that a timeout kills everything it started), one at a time, so no system's memory, threads or
object store pollute another's. Phases:

* ``baseline`` -- the machine: ``numpy.copy`` (a newly allocated array each time: fresh pages),
  ``numpy.copyto`` into a preallocated, already-touched array (warm pages), ``np.linalg.norm``
  and ``np.full`` locally, and raw loopback TCP between two processes (the sender ``sendall``s
  the vector's bytes from a preallocated, touched buffer; the receiver ``recv_into``s a
  preallocated bytearray; timed at the receiver from its go byte to the last byte).
* ``qsrv`` / ``ray`` / ``dask`` -- cases a-c, two worker slots each: qsrv ``init(num_cpus=2)``
  (scheduler + one worker agent + two executors), Ray ``init(num_cpus=2)``, Dask
  ``LocalCluster(n_workers=2, threads_per_worker=1)``.
    a. put + get in the driver: the ``put`` call; put followed by a no-op task round trip
       ("until stored": a put that returns before its bytes have left the driver is only done
       once the cluster answers a later message); then ``get`` of the ref, with what came back
       (read-only? sharing memory with the source?). Dask's put is ``scatter(hash=False)``.
    b. pass by ref: the vector is put (untimed), then ``get(norm_task(ref))`` is timed;
       overhead = that - ``np.linalg.norm`` of the same vector done locally (the baseline's
       figure, the same for every system; the norm timed in the system's own driver just
       before each task is recorded too, as ``norm_inprocess_s``).
    c. return: a task makes the vector (``np.full``) and returns it; time until the driver holds
       it, minus the local ``np.full`` time (the baseline's, as in b) = return overhead; GB/s =
       bytes / overhead.
* ``qsrv-nodes`` / ``ray-nodes`` / Dask's same cluster -- case d, across nodes: two worker
  processes on this machine, each with its own object store; a task pinned to node A makes the
  vector, then a task pinned to node B reads one element of it. transfer = (time of the B task)
  - (round trip of a no-op task pinned to B); GB/s = bytes / transfer. qsrv: a cluster started
  with the CLI (``qsrv scheduler --port 0``, two ``qsrv worker --cpus 1 --resources node_X=1``)
  joined with ``qsrv.init(address=...)``, tasks pinned with ``target={"node_X": 1}``; Ray:
  ``ray.cluster_utils.Cluster`` with two raylets (``resources={"node_X": 1}``); Dask: the two
  workers of the LocalCluster, pinned with ``workers=[address]``. The same-node read (the A
  task reading what A made) is shown for contrast.

Each case runs once untimed at full size (warm-up: imports, executor start, page faults), then
``--repeat`` times; the figures are medians. After each repetition the vector is released and
the run pauses 0.5 s, so that no timed section overlaps a system's freeing of the previous one
(Ray's put takes 200-700 ms instead of ~30 ms while the previous 256 MiB object is still being
freed). GB/s = 1e9 bytes per second. Timings are reported, never asserted: the machine is
shared, and the load average is recorded at the start and end. The baseline runs again at the
end; the machine's figures used in ratios and overheads are the mean of the two.
qsrv is measured through its public API only (init, put, get, wait, distribute_task, status,
shutdown), so the benchmark reads the same before and after objects move into per-node
shared-memory stores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import multiprocessing
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "objects.json"
WORKERS = 2
PHASES = ("baseline", "qsrv", "qsrv-nodes", "ray", "ray-nodes", "dask")
GB = 1e9
SETTLE_S = 0.5


# ---- the task functions (shipped by value from __main__ to every system) -------------------
def _state(n: int) -> np.ndarray[Any, Any]:
    """A normalised uniform superposition: the vector every case moves."""
    return np.full(n, 1 / np.sqrt(n), dtype=np.complex128)


def _norm(x: np.ndarray[Any, Any]) -> float:
    return float(np.linalg.norm(x))


def _touch(x: np.ndarray[Any, Any]) -> tuple[float, int]:
    """Read one element (the whole object has arrived before a task runs) and say where."""
    return float(x[-1].real), os.getpid()


def _noop() -> int:
    return os.getpid()


# ---- helpers -------------------------------------------------------------------------------
def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _settle() -> None:
    """Between repetitions, after the previous vector was released: let every system finish
    freeing it. (Ray's put takes 200-700 ms instead of ~30 ms while the previous 256 MiB object
    is still being freed; no timed section may overlap another's clean-up.)"""
    gc.collect()
    time.sleep(SETTLE_S)


def _flags(value: Any, source: np.ndarray[Any, Any] | None = None) -> dict[str, Any]:
    if not isinstance(value, np.ndarray):
        return {"type": type(value).__name__}
    out: dict[str, Any] = {"writeable": bool(value.flags.writeable),
                           "owndata": bool(value.flags.owndata)}
    if source is not None:
        out["shares_source"] = bool(np.shares_memory(value, source))
    return out


def _local(arr: np.ndarray[Any, Any], repeat: int) -> dict[str, float]:
    """The local norm and np.full times the overheads of b and c are taken against."""
    n = arr.size
    return {"norm_local_s": _median_s(lambda: np.linalg.norm(arr), repeat),
            "create_local_s": _median_s(lambda: _state(n), repeat)}


@dataclass
class Api:
    """One system's calls, blocking: the cases below are written once against these."""
    put: Callable[[Any], Any]           # value -> ref, as the system's put returns it
    get: Callable[[Any], Any]           # ref -> value in the driver
    roundtrip: Callable[[], Any]        # submit a no-op task and wait for it
    norm: Callable[[Any], Any]          # ref -> ref of a norm task on it
    make: Callable[[int], Any]          # n -> ref of a task that creates the vector


def case_put(api: Api, arr: np.ndarray[Any, Any], repeat: int) -> dict[str, Any]:
    calls, stored, gets = [], [], []
    flags: dict[str, Any] = {}
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        ref = api.put(arr)
        t1 = time.perf_counter()
        api.roundtrip()
        t2 = time.perf_counter()
        value = api.get(ref)
        t3 = time.perf_counter()
        flags = _flags(value, arr)
        if not np.array_equal(value[-4:], arr[-4:]):
            raise AssertionError("get returned different data")
        if i:
            calls.append(t1 - t0)
            stored.append(t2 - t0)
            gets.append(t3 - t2)
        del value, ref
        _settle()
    return {"put_call_s": statistics.median(calls), "put_stored_s": statistics.median(stored),
            "get_s": statistics.median(gets), "get_flags": flags,
            "samples": {"put_call_s": calls, "put_stored_s": stored, "get_s": gets}}


def case_pass_ref(api: Api, arr: np.ndarray[Any, Any], repeat: int) -> dict[str, Any]:
    """Each repetition times the local norm right before the task, so that both see the same
    conditions; overhead = median(task) - median(local)."""
    expect = float(np.linalg.norm(arr))
    times, local = [], []
    for i in range(repeat + 1):
        ref = api.put(arr)
        api.roundtrip()  # stored before the clock starts
        t0 = time.perf_counter()
        np.linalg.norm(arr)
        t1 = time.perf_counter()
        got = api.get(api.norm(ref))
        t2 = time.perf_counter()
        if abs(got - expect) > 1e-9 * max(1.0, expect):
            raise AssertionError(f"norm task returned {got}, expected {expect}")
        if i:
            local.append(t1 - t0)
            times.append(t2 - t1)
        del ref
        _settle()
    return {"total_s": statistics.median(times), "norm_inprocess_s": statistics.median(local),
            "samples": {"total_s": times, "norm_inprocess_s": local}}


def case_return(api: Api, n: int, repeat: int) -> dict[str, Any]:
    """As case_pass_ref: the local np.full is timed in every repetition, before the task."""
    times, local = [], []
    flags: dict[str, Any] = {}
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        mine = _state(n)
        t1 = time.perf_counter()
        del mine
        t2 = time.perf_counter()
        ref = api.make(n)
        value = api.get(ref)
        t3 = time.perf_counter()
        if value.shape != (n,) or value[0] != 1 / np.sqrt(n):
            raise AssertionError("the returned vector is wrong")
        flags = _flags(value)
        if i:
            local.append(t1 - t0)
            times.append(t3 - t2)
        del value, ref
        _settle()
    return {"total_s": statistics.median(times), "create_inprocess_s": statistics.median(local),
            "get_flags": flags, "samples": {"total_s": times, "create_inprocess_s": local}}


@dataclass
class NodesApi:
    produce: Callable[[int], Any]               # n -> ref of a task on node A making the vector
    ready: Callable[[Any], None]                # wait until the ref's object exists (no fetch)
    consume: Callable[[Any, str], tuple[float, int]]  # (ref, "a"/"b") -> _touch's result
    noop: Callable[[str], int]                  # "a"/"b" -> pid of a no-op task pinned there


def case_nodes(api: NodesApi, n: int, repeat: int) -> dict[str, Any]:
    noop_b = _median_s(lambda: api.noop("b"), 21)
    noop_a = _median_s(lambda: api.noop("a"), 21)
    pid_a, pid_b = api.noop("a"), api.noop("b")
    produce, remote, local = [], [], []
    pids = set()
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        ref = api.produce(n)
        api.ready(ref)
        t1 = time.perf_counter()
        _, pb = api.consume(ref, "b")
        t2 = time.perf_counter()
        _, pa = api.consume(ref, "a")
        t3 = time.perf_counter()
        pids.add((pa, pb))
        if i:
            produce.append(t1 - t0)
            remote.append(t2 - t1)
            local.append(t3 - t2)
        del ref
        _settle()
    if pid_a == pid_b or any(a == b for a, b in pids):
        raise AssertionError(f"node A and node B tasks ran in the same process: {pids}")
    return {"produce_s": statistics.median(produce), "consume_b_s": statistics.median(remote),
            "consume_a_s": statistics.median(local), "noop_b_s": noop_b, "noop_a_s": noop_a,
            "transfer_s": statistics.median(remote) - noop_b,
            "pids": {"a": pid_a, "b": pid_b},
            "samples": {"produce_s": produce, "consume_b_s": remote, "consume_a_s": local}}


# ---- baseline --------------------------------------------------------------------------------
def _tcp_sender(port: int, nbytes: int, rounds: int) -> None:
    buf = bytearray(b"\x07") * nbytes  # preallocated and touched
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(rounds):
            if sock.recv(1) != b"g":
                return
            sock.sendall(view)


def tcp_loopback(nbytes: int, repeat: int) -> float:
    """Median seconds to move `nbytes` from one process to another over loopback TCP."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = multiprocessing.get_context("fork").Process(
            target=_tcp_sender, args=(port, nbytes, repeat + 1), daemon=True)
        sender.start()
        conn, _ = server.accept()
    buf = bytearray(nbytes)
    view = memoryview(buf)
    times = []
    with conn:
        for i in range(repeat + 1):  # the first round is a warm-up (touches the buffer)
            t0 = time.perf_counter()
            conn.sendall(b"g")
            got = 0
            while got < nbytes:
                k = conn.recv_into(view[got:])
                if not k:
                    raise ConnectionError("the sender went away")
                got += k
            if i:
                times.append(time.perf_counter() - t0)
    sender.join(10)
    return statistics.median(times)


def run_baseline(n: int, repeat: int) -> dict[str, Any]:
    arr = _state(n)
    out: dict[str, Any] = {"copy_fresh_s": _median_s(lambda: np.copy(arr), repeat)}
    warm = np.empty_like(arr)
    warm[:] = 0  # touched: its pages exist before the clock starts
    out["copy_warm_s"] = _median_s(lambda: np.copyto(warm, arr), repeat)
    out.update(_local(arr, repeat))
    out["tcp_s"] = tcp_loopback(arr.nbytes, repeat)
    return out


# ---- qsrv ------------------------------------------------------------------------------------
def run_qsrv(n: int, repeat: int) -> dict[str, Any]:
    import qsrv

    t0 = time.perf_counter()
    qsrv.init(num_cpus=WORKERS)
    try:
        noop = qsrv.distribute_task(_noop)
        norm = qsrv.distribute_task(_norm)
        make = qsrv.distribute_task(_state)
        qsrv.get([noop() for _ in range(4 * WORKERS)])
        qsrv.get([norm(np.ones(8, dtype=np.complex128)) for _ in range(WORKERS)])
        startup = time.perf_counter() - t0
        arr = _state(n)
        api = Api(put=qsrv.put, get=qsrv.get, roundtrip=lambda: qsrv.get(noop()),
                  norm=norm, make=make)
        return {"setup": f"qsrv.init(num_cpus={WORKERS}): scheduler + 1 worker agent + "
                         f"{WORKERS} executors", "startup_s": startup,
                "put": case_put(api, arr, repeat),
                "pass_ref": case_pass_ref(api, arr, repeat),
                "return": case_return(api, n, repeat)}
    finally:
        qsrv.shutdown()


@contextlib.contextmanager
def qsrv_cli_cluster(logdir: Path) -> Iterator[tuple[str, str]]:
    """A scheduler and two workers (node_a, node_b) started with the qsrv CLI; (address, token)."""
    token = secrets.token_urlsafe(24)
    env = {**os.environ, "QSRV_TOKEN": token}
    env.pop("QSRV_ADDRESS", None)
    cli = [sys.executable, "-m", "qsrv"]
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(name: str, args: list[str]) -> Path:
        log = logdir / f"qsrv-{name}.log"
        logs.append(open(log, "wb"))  # noqa: SIM115 -- closed in the finally below
        procs.append(subprocess.Popen(cli + args, stdout=logs[-1], stderr=subprocess.STDOUT,
                                      env=env))
        return log

    try:
        log = start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0"])
        address = ""
        deadline = time.monotonic() + 60
        while not address:
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("qsrv scheduler did not start: "
                                   + log.read_text(errors="replace")[-2000:])
            for line in log.read_text(errors="replace").splitlines():
                if "listening on " in line:
                    address = line.split("listening on ", 1)[1].split()[0]
            time.sleep(0.05)
        for tag in ("node_a", "node_b"):
            start(tag, ["worker", "--address", address, "--cpus", "1", "--executors", "1",
                        "--resources", f"{tag}=1", "--name", tag, "--reconnect-timeout", "0"])
        yield address, token
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in logs:
            f.close()


def run_qsrv_nodes(n: int, repeat: int) -> dict[str, Any]:
    import qsrv

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-objects-") as tmp, \
            qsrv_cli_cluster(Path(tmp)) as (address, token):
        qsrv.init(address=address, token=token)
        try:
            deadline = time.monotonic() + 60
            while len(qsrv.status().get("workers", [])) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"two workers did not join: {qsrv.status()}")
                time.sleep(0.1)
            on = {tag: {f"node_{tag}": 1} for tag in ("a", "b")}
            make_a = qsrv.distribute_task(target=on["a"])(_state)
            touch = {tag: qsrv.distribute_task(target=on[tag])(_touch) for tag in on}
            noop = {tag: qsrv.distribute_task(target=on[tag])(_noop) for tag in on}
            for tag in on:  # warm: numpy imported in both executors
                qsrv.get(touch[tag](np.ones(8, dtype=np.complex128)))
            startup = time.perf_counter() - t0

            def ready(ref: Any) -> None:
                qsrv.wait([ref], num_returns=1)

            api = NodesApi(produce=make_a, ready=ready,
                           consume=lambda ref, tag: qsrv.get(touch[tag](ref)),
                           noop=lambda tag: qsrv.get(noop[tag]()))
            return {"setup": "qsrv CLI: scheduler --port 0 + 2 x worker --cpus 1 --resources "
                             "node_X=1, driver qsrv.init(address=...)",
                    "startup_s": startup, "nodes": case_nodes(api, n, repeat)}
        finally:
            qsrv.shutdown()


# ---- Ray -------------------------------------------------------------------------------------
def _ray_store_bytes(n: int) -> int:
    return max(1 << 30, 8 * 16 * n)  # room for a few vectors; a ceiling, not an allocation


def run_ray(n: int, repeat: int) -> dict[str, Any]:
    import ray as _ray

    ray: Any = _ray
    t0 = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
             object_store_memory=_ray_store_bytes(n))
    try:
        noop = ray.remote(num_cpus=1)(_noop)
        norm = ray.remote(num_cpus=1)(_norm)
        make = ray.remote(num_cpus=1)(_state)
        ray.get([noop.remote() for _ in range(4 * WORKERS)])
        ray.get([norm.remote(np.ones(8, dtype=np.complex128)) for _ in range(WORKERS)])
        startup = time.perf_counter() - t0
        arr = _state(n)
        api = Api(put=ray.put, get=ray.get, roundtrip=lambda: ray.get(noop.remote()),
                  norm=norm.remote, make=make.remote)
        return {"setup": f"ray.init(num_cpus={WORKERS}): one raylet, one plasma store",
                "startup_s": startup,
                "put": case_put(api, arr, repeat),
                "pass_ref": case_pass_ref(api, arr, repeat),
                "return": case_return(api, n, repeat)}
    finally:
        ray.shutdown()


def run_ray_nodes(n: int, repeat: int) -> dict[str, Any]:
    import ray as _ray
    from ray import cluster_utils

    ray: Any = _ray
    t0 = time.perf_counter()
    store = _ray_store_bytes(n)
    cluster: Any = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"node_a": 1},
                        "object_store_memory": store, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, resources={"node_b": 1}, object_store_memory=store)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        on = {tag: {"resources": {f"node_{tag}": 1}, "num_cpus": 1} for tag in ("a", "b")}
        make_a = ray.remote(**on["a"])(_state)
        touch = {tag: ray.remote(**on[tag])(_touch) for tag in on}
        noop = {tag: ray.remote(**on[tag])(_noop) for tag in on}
        for tag in on:
            ray.get(touch[tag].remote(np.ones(8, dtype=np.complex128)))
        startup = time.perf_counter() - t0

        def ready(ref: Any) -> None:
            ray.wait([ref], num_returns=1, fetch_local=False)

        api = NodesApi(produce=make_a.remote, ready=ready,
                       consume=lambda ref, tag: ray.get(touch[tag].remote(ref)),
                       noop=lambda tag: ray.get(noop[tag].remote()))
        nodes = len([x for x in ray.nodes() if x.get("Alive")])
        return {"setup": f"ray.cluster_utils.Cluster: {nodes} raylets (head node_a + node_b), "
                         "one plasma store each, driver on the head",
                "startup_s": startup, "nodes": case_nodes(api, n, repeat)}
    finally:
        ray.shutdown()
        cluster.shutdown()


# ---- Dask ------------------------------------------------------------------------------------
def run_dask(n: int, repeat: int) -> dict[str, Any]:
    import distributed as _distributed

    dd: Any = _distributed
    t0 = time.perf_counter()
    cluster = dd.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                              dashboard_address=None)
    client = dd.Client(cluster)
    try:
        client.gather([client.submit(_noop, pure=False) for _ in range(4 * WORKERS)])
        workers = sorted(client.scheduler_info()["workers"])
        client.gather([client.submit(_norm, np.ones(8, dtype=np.complex128), workers=[w],
                                     pure=False) for w in workers])
        startup = time.perf_counter() - t0
        arr = _state(n)
        api = Api(put=lambda x: client.scatter(x, hash=False), get=lambda f: f.result(),
                  roundtrip=lambda: client.submit(_noop, pure=False).result(),
                  norm=lambda f: client.submit(_norm, f, pure=False),
                  make=lambda k: client.submit(_state, k, pure=False))
        out = {"setup": f"LocalCluster(n_workers={WORKERS}, threads_per_worker=1): each worker "
                        "process holds its own data; the nodes case pins workers=[address]",
               "startup_s": startup,
               "put": case_put(api, arr, repeat),
               "pass_ref": case_pass_ref(api, arr, repeat),
               "return": case_return(api, n, repeat)}
        del arr
        pin = {"a": [workers[0]], "b": [workers[1]]}

        def submit_on(tag: str, fn: Callable[..., Any], *args: Any) -> Any:
            return client.submit(fn, *args, workers=pin[tag], allow_other_workers=False,
                                 pure=False)

        nodes = NodesApi(produce=lambda k: submit_on("a", _state, k),
                         ready=lambda f: dd.wait([f]),
                         consume=lambda f, tag: submit_on(tag, _touch, f).result(),
                         noop=lambda tag: submit_on(tag, _noop).result())
        out["nodes"] = case_nodes(nodes, n, repeat)
        return out
    finally:
        client.close()
        cluster.close()


RUNNERS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "baseline": run_baseline, "qsrv": run_qsrv, "qsrv-nodes": run_qsrv_nodes,
    "ray": run_ray, "ray-nodes": run_ray_nodes, "dask": run_dask}


def child(phase: str, n: int, repeat: int, out: Path) -> None:
    result = RUNNERS[phase](n, repeat)
    out.write_text(json.dumps(result, indent=2))


# ---- parent ----------------------------------------------------------------------------------
def run_phase(phase: str, n: int, repeat: int, timeout: float, logdir: Path,
              label: str | None = None) -> dict[str, Any]:
    label = label or phase
    out = logdir / f"{label}.json"
    log = logdir / f"{label}.log"
    print(f"  {label:<12}", end=" ", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("QSRV_ADDRESS", None)
    env.pop("QSRV_TOKEN", None)
    t0 = time.perf_counter()
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", phase, "--n", str(n), "--repeat", str(repeat),
             "--out", str(out)],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, cwd=HERE, env=env)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        # Whatever the child left (Ray's raylets, qsrv's CLI processes) is in its session.
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
    return {"error": f"{why}: {last[0][:200]}", "wall_s": took}


LIMIT_KEYS = ("copy_fresh_s", "copy_warm_s", "tcp_s", "norm_local_s", "create_local_s")


def limits(phases: dict[str, Any]) -> dict[str, float]:
    """The machine's figures: the mean of the baseline at the start and at the end."""
    runs = [phases[k] for k in ("baseline", "baseline_end")
            if k in phases and "error" not in phases[k]]
    return {key: statistics.mean(r[key] for r in runs) for key in LIMIT_KEYS} if runs else {}


def derive_overheads(res: dict[str, Any]) -> None:
    """overhead = task total - the local time of the same work. The local time is the
    baseline's (mean of start and end: a quiet process, the same figure for every system);
    the one timed in the system's own driver before each task is kept as ``*_inprocess_s``
    and used only where the baseline did not run. (In a driver process, a fresh 256 MiB
    np.full takes 30 ms or, with the kernel's page-fault and huge-page noise, 120 ms, so the
    in-process figure made overheads jump by +-90 ms.)"""
    lim = res.get("limits", {})
    for name in ("qsrv", "ray", "dask"):
        phase = res["phases"].get(name, {})
        for section, key in (("pass_ref", "norm"), ("return", "create")):
            part = phase.get(section)
            if not part:
                continue
            base = lim.get(f"{key}_local_s")
            part["local_ref_s"] = base if base is not None else part[f"{key}_inprocess_s"]
            part["local_ref"] = "baseline" if base is not None else "in-process"
            part["overhead_s"] = part["total_s"] - part["local_ref_s"]


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("qsrv", "ray", "distributed"):
        try:
            versions[mod] = version(mod)
        except Exception:
            versions[mod] = "not installed"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                              capture_output=True, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "../qsrv"], cwd=HERE,
                               text=True, capture_output=True, timeout=10).stdout.split("\n")
        modified = sorted(line[3:] for line in dirty if line.strip())
    except (OSError, subprocess.SubprocessError):
        head, modified = "?", []
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
                                / 2**30, 1),
            "versions": versions, "git": head, "qsrv_modified": modified}


# ---- rendering -------------------------------------------------------------------------------
def _ms(s: float | None) -> str:
    if s is None:
        return "n/a"
    ms = s * 1e3
    return f"{ms:,.0f}" if abs(ms) >= 100 else f"{ms:.1f}" if abs(ms) >= 1 else f"{ms:.3f}"


def _gbps(nbytes: int, s: float | None) -> str:
    if s is None:
        return "n/a"
    if s <= 0:
        return "n/a (within noise)"
    return f"{nbytes / s / GB:.2f}"


def _get_note(flags: dict[str, Any]) -> str:
    if "writeable" not in flags:
        return str(flags.get("type", "?"))
    parts = ["writeable" if flags["writeable"] else "read-only"]
    if flags.get("shares_source"):
        parts.append("a view of the put source")
    elif not flags["owndata"]:
        parts.append("a view of a buffer")
    return ", ".join(parts)


def _why(r: dict[str, Any]) -> str:
    return "n/a (not run)" if r["error"] == "not run" else "n/a (phase failed)"


def _cell(r: dict[str, Any], nbytes: int, section: str, key: str, rate: bool = True,
          ref: tuple[str, str] | None = None) -> str:
    """`ref`: (label, key) of the local time an overhead was taken against, shown with it."""
    if "error" in r:
        return _why(r)
    part = r.get(section)
    if part is None:
        return "n/a"
    s = part[key]
    extra = [f"{_gbps(nbytes, s)} GB/s"] if rate and s > 0 else []
    if s <= 0:
        extra.append("<= 0: within noise")
    if ref:
        extra.append(f"{ref[0]} {_ms(part[ref[1]])} ms")
    return f"{_ms(s)} ms" + (f" ({'; '.join(extra)})" if extra else "")


def render(res: dict[str, Any]) -> str:
    nbytes = res["nbytes"]
    ph = res["phases"]
    empty: dict[str, Any] = {"error": "not run"}
    base = ph.get("baseline", empty)
    q, r, d = (ph.get(k, empty) for k in ("qsrv", "ray", "dask"))
    qn, rn = ph.get("qsrv-nodes", empty), ph.get("ray-nodes", empty)
    m = res["machine"]
    v = m["versions"]
    lines = [
        f"Run {res['started']} on {m['nproc']} x {m['cpu']} ({m['memory_gib']} GiB, kernel "
        f"{m['kernel']}); python {v['python']}, numpy {v['numpy']}, qsrv {v['qsrv']} at "
        f"{m['git']}{' (qsrv/ modified)' if m['qsrv_modified'] else ''}, ray {v['ray']}, "
        f"distributed {v['distributed']}; 2^{res['qubits']} complex128 = {nbytes / 2**20:.0f} "
        f"MiB; median of {res['repeat']} after a warm-up; load average at start "
        f"{res['loadavg_start']}, at end {res['loadavg_end']}; total {res['seconds']:.0f} s.",
        "", "Machine limits, measured in this run at its start and at its end (ratios use "
        "the mean):", "",
        "| measurement | start ms | end ms | mean ms | mean GB/s |", "|---|---:|---:|---:|---:|"]
    end = ph.get("baseline_end", empty)
    lim = res.get("limits", {})
    if not lim:
        lines.append(f"| baseline | n/a ({base.get('error', 'not run')}) | | | |")
    else:
        for label, key in zip(("numpy.copy into fresh pages (new array each time)",
                               "numpy.copyto into warm pages (preallocated)",
                               "loopback TCP, 2 processes, sendall -> recv_into",
                               "np.linalg.norm, local", "np.full (create the vector), local"),
                              LIMIT_KEYS, strict=True):
            cells = [_ms(x[key]) if "error" not in x else "n/a" for x in (base, end)]
            lines.append(f"| {label} | {' | '.join(cells)} | {_ms(lim[key])} | "
                         f"{_gbps(nbytes, lim[key])} |")

    systems = (("qsrv", q, qn), ("Ray", r, rn), ("Dask", d, d))
    lines += ["", "| case | " + " | ".join(s for s, _, _ in systems) + " |",
              "|---|" + "---:|" * len(systems)]

    def row(label: str, fn: Callable[[dict[str, Any], dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(a, b) for _, a, b in systems) + " |")

    row("a. put, the call", lambda a, _: _cell(a, nbytes, "put", "put_call_s"))
    row("a. put, until stored (put + no-op task round trip)",
        lambda a, _: _cell(a, nbytes, "put", "put_stored_s"))
    row("a. get of the put ref", lambda a, _: _cell(a, nbytes, "put", "get_s"))
    row("a. what get returned",
        lambda a, _: _why(a) if "error" in a else _get_note(a["put"]["get_flags"]))
    row("b. pass by ref to a norm task, total",
        lambda a, _: _cell(a, nbytes, "pass_ref", "total_s", rate=False))
    row("b. overhead (total - local norm of the baseline)",
        lambda a, _: _cell(a, nbytes, "pass_ref", "overhead_s", rate=False,
                           ref=("local norm", "local_ref_s")))
    row("c. task creates + returns the vector, total",
        lambda a, _: _cell(a, nbytes, "return", "total_s", rate=False))
    row("c. return overhead (total - local np.full of the baseline)",
        lambda a, _: _cell(a, nbytes, "return", "overhead_s",
                           ref=("local np.full", "local_ref_s")))
    row("c. what get returned",
        lambda a, _: _why(a) if "error" in a else _get_note(a["return"]["get_flags"]))
    row("d. across nodes: produce on A (submit -> ready)",
        lambda _, b: _cell(b, nbytes, "nodes", "produce_s", rate=False))
    row("d. task on B reads it, total",
        lambda _, b: _cell(b, nbytes, "nodes", "consume_b_s", rate=False))
    row("d. no-op task pinned to B, round trip",
        lambda _, b: _cell(b, nbytes, "nodes", "noop_b_s", rate=False))
    row("d. transfer A -> B (total - no-op)",
        lambda _, b: _cell(b, nbytes, "nodes", "transfer_s"))
    row("d. (contrast) task on A reads it, same node",
        lambda _, b: _cell(b, nbytes, "nodes", "consume_a_s", rate=False))
    row("startup (a-c setup; d setup) s",
        lambda a, b: " ; ".join(_why(x) if "error" in x else f"{x['startup_s']:.1f}"
                                for x in ((a, b) if a is not b else (a,))))
    lines.append("")
    for name, a, b in systems:
        for x in ((a, b) if a is not b else (a,)):
            if "error" in x:
                lines.append(f"- {name}: n/a, {x['error']}")
            else:
                lines.append(f"- {name}: {x['setup']}")

    lines += ["", "| ratio | value | note |", "|---|---:|---|"]
    for label, value, note in ratios(res):
        lines.append(f"| {label} | {value} | {note} |")
    return "\n".join(lines) + "\n"


def _get(d: dict[str, Any], *path: str) -> float | None:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return float(cur) if isinstance(cur, int | float) else None


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    if a <= 0 or b <= 0:
        return "n/a (a time within noise)"
    return f"{a / b:.2f}x"


def ratios(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    ph = res["phases"]
    nbytes = res["nbytes"]
    q, r, d = (ph.get(k, {}) for k in ("qsrv", "ray", "dask"))
    lim = res.get("limits") or limits(ph)
    copy, tcp = lim.get("copy_fresh_s"), lim.get("tcp_s")
    put_q, put_r = _get(q, "put", "put_stored_s"), _get(r, "put", "put_stored_s")
    get_q = _get(q, "put", "get_s")
    out = [("qsrv put (until stored) / numpy.copy fresh pages, time", _ratio(put_q, copy),
            "1.00x = as fast as copying into new memory"),
           ("qsrv put (until stored) / Ray put (until stored), time", _ratio(put_q, put_r),
            "< 1: qsrv faster"),
           ("qsrv put (the call) / Ray put (the call), time",
            _ratio(_get(q, "put", "put_call_s"), _get(r, "put", "put_call_s")), "")]
    if get_q is not None and copy is not None:
        flags = q["put"]["get_flags"]
        # Zero-copy: what came back does not own its memory, and took well under a copy.
        zero = get_q < 0.5 * copy and not flags.get("owndata", True)
        out.append(("qsrv get of a put ref / numpy.copy fresh pages, time",
                    f"zero-copy ({get_q * 1e6:,.0f} µs; {_ratio(get_q, copy)})" if zero
                    else _ratio(get_q, copy), _get_note(flags)))
    else:
        out.append(("qsrv get of a put ref / numpy.copy fresh pages, time", "n/a", ""))
    get_qr = _get(q, "return", "overhead_s")
    out.append(("qsrv get of a task result (return overhead) / numpy.copy fresh, time",
                _ratio(get_qr, copy), _get_note(q["return"]["get_flags"]) if "return" in q
                else ""))
    ovs = [(name, _get(x, "pass_ref", "overhead_s")) for name, x in
           (("qsrv", q), ("Ray", r), ("Dask", d))]
    out.append(("pass-by-ref overhead, ms (qsrv / Ray / Dask)",
                " / ".join(_ms(o) for _, o in ovs), "task total - local norm"))
    out.append(("pass-by-ref overhead, qsrv / Ray", _ratio(ovs[0][1], ovs[1][1]), ""))
    out.append(("return overhead, qsrv / Ray", _ratio(get_qr, _get(r, "return", "overhead_s")),
                "< 1: qsrv faster"))
    out.append(("return overhead, qsrv / Dask",
                _ratio(get_qr, _get(d, "return", "overhead_s")), ""))
    for name, x in (("qsrv", ph.get("qsrv-nodes", {})), ("Ray", ph.get("ray-nodes", {})),
                    ("Dask", d)):
        tr = _get(x, "nodes", "transfer_s")
        note = f"{_gbps(nbytes, tr)} vs {_gbps(nbytes, tcp)} GB/s"
        out.append((f"across nodes, {name} transfer GB/s / raw loopback TCP GB/s",
                    _ratio(tcp, tr), note))
    tq, tr_ = _get(ph.get("qsrv-nodes", {}), "nodes", "transfer_s"), \
        _get(ph.get("ray-nodes", {}), "nodes", "transfer_s")
    out.append(("across nodes, qsrv / Ray transfer time", _ratio(tq, tr_), "< 1: qsrv faster"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=24, help="vector of 2^N complex128")
    parser.add_argument("--quick", action="store_true", help="2^20 and 3 repetitions")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed repetitions per case (default 7; 3 with --quick)")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases, of {','.join(PHASES)}")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per phase (default 240; 90 with --quick)")
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.repeat, args.out)
        return
    qubits = 20 if args.quick and args.qubits == 24 else args.qubits
    repeat = args.repeat or (3 if args.quick else 7)
    timeout = args.timeout or (90.0 if args.quick else 240.0)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    n = 1 << qubits
    res: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "qubits": qubits, "n": n, "nbytes": n * 16, "repeat": repeat,
        "mode": "quick" if args.quick else "full", "machine": machine(),
        "loadavg_start": _loadavg(), "phases": {}}
    print(f"2^{qubits} complex128 ({n * 16 / 2**20:.0f} MiB), repeat {repeat}, "
          f"load average {res['loadavg_start']}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-objects-") as tmp:
        for phase in PHASES:
            if phase in phases:
                res["phases"][phase] = run_phase(phase, n, repeat, timeout, Path(tmp))
        if "baseline" in phases and len(phases) > 1:  # the machine again, after the systems
            res["phases"]["baseline_end"] = run_phase("baseline", n, repeat, timeout, Path(tmp),
                                                      label="baseline_end")
    res["limits"] = limits(res["phases"])
    derive_overheads(res)
    res["seconds"] = time.perf_counter() - t0
    res["loadavg_end"] = _loadavg()
    res["ratios"] = [{"ratio": a, "value": b, "note": c} for a, b, c in ratios(res)]
    print()
    print(render(res))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
