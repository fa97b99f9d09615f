"""Large objects: moving state vectors (2^24 complex128 = 256 MiB) with qsrv, Ray and Dask,
against the machine's own limits measured in the same run.

    python benchmarks/bench_objects.py               # 2^24, ~2.5 minutes on 2 cores
    python benchmarks/bench_objects.py --quick       # 2^20 (16 MiB), under a minute
    python benchmarks/bench_objects.py --qubits 22 --repeat 5 --only baseline,qsrv
    python benchmarks/bench_objects.py --json /tmp/objects.json
    python benchmarks/bench_objects.py --write-md    # also add the table to benchmarks/README.md

Every phase runs in a fresh subprocess (this file with ``--child PHASE``, in its own session so
that a timeout kills everything it started), one at a time, so no system's memory, threads or
object store pollute another's. Phases:

* ``baseline`` -- the machine (``_machine.py``): ``numpy.copy`` (a newly allocated array each
  time: fresh pages), ``numpy.copyto`` into a preallocated, already-touched array (warm pages),
  raw loopback TCP between two processes (``sendall`` from a preallocated, touched buffer into
  ``recv_into`` a preallocated bytearray); and ``np.linalg.norm`` and ``np.full`` locally.
* ``qsrv`` / ``ray`` / ``dask`` -- cases a-c, two worker slots each (``_qsrv.py``,
  ``_ray.py``, ``_dask.py``): qsrv ``init(num_cpus=2)`` (scheduler + one worker agent + two
  executors), Ray ``init(num_cpus=2)``, Dask ``LocalCluster(n_workers=2, threads_per_worker=1)``.
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
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c
import _machine
import numpy as np

TAG = "bench_objects"
PHASES = ("baseline", "qsrv", "qsrv-nodes", "ray", "ray-nodes", "dask")
SETTLE_S = 0.5
LIMIT_KEYS = ("copy_fresh_s", "copy_warm_s", "tcp_s", "norm_local_s", "create_local_s")


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


# ---- the cases, written once against a system's blocking calls ------------------------------
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
    return {"norm_local_s": c.median_time(lambda: np.linalg.norm(arr), repeat),
            "create_local_s": c.median_time(lambda: _state(n), repeat)}


@dataclass
class Api:
    """One system's calls, blocking: the cases below are written once against these."""
    put: Callable[[Any], Any]           # value -> ref, as the system's put returns it
    get: Callable[[Any], Any]           # ref -> value in the driver
    roundtrip: Callable[[], Any]        # submit a no-op task and wait for it
    norm: Callable[[Any], Any]          # ref -> ref of a norm task on it
    make: Callable[[int], Any]          # n -> ref of a task that creates the vector

    @classmethod
    def of(cls, cl: c.Cluster) -> Api:
        noop = cl.task(_noop)
        return cls(put=cl.put, get=cl.get, roundtrip=lambda: cl.get(noop()),
                   norm=cl.task(_norm), make=cl.task(_state))


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

    @classmethod
    def of(cls, cl: c.Cluster) -> NodesApi:
        touch = {tag: cl.task(_touch, node=tag) for tag in "ab"}
        noop = {tag: cl.task(_noop, node=tag) for tag in "ab"}
        return cls(produce=cl.task(_state, node="a"), ready=cl.ready,
                   consume=lambda ref, tag: cl.get(touch[tag](ref)),
                   noop=lambda tag: cl.get(noop[tag]()))


def case_nodes(api: NodesApi, n: int, repeat: int) -> dict[str, Any]:
    noop_b = c.median_time(lambda: api.noop("b"), 21)
    noop_a = c.median_time(lambda: api.noop("a"), 21)
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


# ---- one phase per child process ---------------------------------------------------------------
def run_baseline(n: int, repeat: int) -> dict[str, Any]:
    arr = _state(n)
    out: dict[str, Any] = _machine.memcpy(arr.nbytes, repeat)
    out.update(_local(arr, repeat))
    out["tcp_s"] = _machine.tcp_bandwidth(arr.nbytes, repeat)
    return out


def _options(name: str, n: int) -> dict[str, Any]:
    # Ray: room for a few vectors in each plasma store; a ceiling, not an allocation
    return {"object_store_memory": max(1 << 30, 8 * 16 * n)} if name == "ray" else {}


def run_system(name: str, n: int, repeat: int) -> tuple[c.Cluster, dict[str, Any]]:
    """Cases a-c on a local cluster with two worker slots; for Dask, case d as well, on the
    same cluster's two worker processes."""
    t0 = time.perf_counter()
    cl = c.start(name, **_options(name, n))
    noop, norm = cl.task(_noop), cl.task(_norm)
    cl.gather([noop() for _ in range(4 * c.WORKERS)])
    small = np.ones(8, dtype=np.complex128)
    # numpy imported in every worker: Dask's tasks are pinned to each worker, the others spread
    norms = ([cl.task(_norm, node=tag) for tag in "ab"] if name == "dask"
             else [norm] * c.WORKERS)
    cl.gather([f(small) for f in norms])
    startup = time.perf_counter() - t0
    arr = _state(n)
    api = Api.of(cl)
    out = {"setup": cl.setup, "startup_s": startup,
           "put": case_put(api, arr, repeat),
           "pass_ref": case_pass_ref(api, arr, repeat),
           "return": case_return(api, n, repeat)}
    if name == "dask":
        del arr
        out["nodes"] = case_nodes(NodesApi.of(cl), n, repeat)
    return cl, out


def run_nodes(name: str, n: int, repeat: int) -> tuple[c.Cluster, dict[str, Any]]:
    """Case d: two nodes with their own object stores."""
    t0 = time.perf_counter()
    cl = c.start(name, nodes=True, **_options(name, n))
    small = np.ones(8, dtype=np.complex128)
    for tag in "ab":  # warm: numpy imported in both executors
        cl.get(cl.task(_touch, node=tag)(small))
    startup = time.perf_counter() - t0
    return cl, {"setup": cl.setup, "startup_s": startup,
                "nodes": case_nodes(NodesApi.of(cl), n, repeat)}


def child(phase: str, n: int, repeat: int, out: Path) -> None:
    if phase == "baseline":
        c.child_done(out, run_baseline(n, repeat))  # exits
    name, _, nodes = phase.partition("-")
    cl, result = (run_nodes if nodes else run_system)(name, n, repeat)
    c.child_done(out, result, cl.shutdown)


# ---- the parent ----------------------------------------------------------------------------------
def limits(phases: dict[str, Any]) -> dict[str, float]:
    """The machine's figures: the mean of the baseline at the start and at the end."""
    pooled = c.mean_of([phases[k] for k in ("baseline", "baseline_end") if k in phases])
    return {key: pooled[key] for key in LIMIT_KEYS if key in pooled}


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


# ---- the report ------------------------------------------------------------------------------
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
    extra = [f"{c.fmt_gbps(nbytes, s)} GB/s"] if rate and s > 0 else []
    if s <= 0:
        extra.append("<= 0: within noise")
    if ref:
        extra.append(f"{ref[0]} {c.fmt_ms(part[ref[1]])} ms")
    return f"{c.fmt_ms(s)} ms" + (f" ({'; '.join(extra)})" if extra else "")


def render(res: dict[str, Any]) -> str:
    nbytes = res["nbytes"]
    ph = res["phases"]
    empty: dict[str, Any] = {"error": "not run"}
    base = ph.get("baseline", empty)
    q, r, d = (ph.get(k, empty) for k in ("qsrv", "ray", "dask"))
    qn, rn = ph.get("qsrv-nodes", empty), ph.get("ray-nodes", empty)
    lines = [
        f"Run {res['date']} on {c.describe(res['machine'])}; 2^{res['qubits']} complex128 = "
        f"{c.fmt_bytes(nbytes)}; median of {res['repeat']} after a warm-up; load average at "
        f"start {res['loadavg_start']}, at end {res['loadavg_end']}; total "
        f"{res['seconds']:.0f} s.",
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
            cells = [c.fmt_ms(x[key]) if "error" not in x else "n/a" for x in (base, end)]
            lines.append(f"| {label} | {' | '.join(cells)} | {c.fmt_ms(lim[key])} | "
                         f"{c.fmt_gbps(nbytes, lim[key])} |")

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


def ratios(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    ph = res["phases"]
    nbytes = res["nbytes"]
    q, r, d = (ph.get(k, {}) for k in ("qsrv", "ray", "dask"))
    lim = res.get("limits") or limits(ph)
    copy, tcp = lim.get("copy_fresh_s"), lim.get("tcp_s")
    put_q, put_r = c.dig(q, "put", "put_stored_s"), c.dig(r, "put", "put_stored_s")
    get_q = c.dig(q, "put", "get_s")
    out = [("qsrv put (until stored) / numpy.copy fresh pages, time", c.ratio(put_q, copy),
            "1.00x = as fast as copying into new memory"),
           ("qsrv put (until stored) / Ray put (until stored), time", c.ratio(put_q, put_r),
            "< 1: qsrv faster"),
           ("qsrv put (the call) / Ray put (the call), time",
            c.ratio(c.dig(q, "put", "put_call_s"), c.dig(r, "put", "put_call_s")), "")]
    if get_q is not None and copy is not None:
        flags = q["put"]["get_flags"]
        # Zero-copy: what came back does not own its memory, and took well under a copy.
        zero = get_q < 0.5 * copy and not flags.get("owndata", True)
        out.append(("qsrv get of a put ref / numpy.copy fresh pages, time",
                    f"zero-copy ({get_q * 1e6:,.0f} µs; {c.ratio(get_q, copy)})" if zero
                    else c.ratio(get_q, copy), _get_note(flags)))
    else:
        out.append(("qsrv get of a put ref / numpy.copy fresh pages, time", "n/a", ""))
    get_qr = c.dig(q, "return", "overhead_s")
    out.append(("qsrv get of a task result (return overhead) / numpy.copy fresh, time",
                c.ratio(get_qr, copy), _get_note(q["return"]["get_flags"]) if "return" in q
                else ""))
    ovs = [(name, c.dig(x, "pass_ref", "overhead_s")) for name, x in
           (("qsrv", q), ("Ray", r), ("Dask", d))]
    out.append(("pass-by-ref overhead, ms (qsrv / Ray / Dask)",
                " / ".join(c.fmt_ms(o) for _, o in ovs), "task total - local norm"))
    out.append(("pass-by-ref overhead, qsrv / Ray", c.ratio(ovs[0][1], ovs[1][1]), ""))
    out.append(("return overhead, qsrv / Ray", c.ratio(get_qr, c.dig(r, "return", "overhead_s")),
                "< 1: qsrv faster"))
    out.append(("return overhead, qsrv / Dask",
                c.ratio(get_qr, c.dig(d, "return", "overhead_s")), ""))
    for name, x in (("qsrv", ph.get("qsrv-nodes", {})), ("Ray", ph.get("ray-nodes", {})),
                    ("Dask", d)):
        tr = c.dig(x, "nodes", "transfer_s")
        note = f"{c.fmt_gbps(nbytes, tr)} vs {c.fmt_gbps(nbytes, tcp)} GB/s"
        out.append((f"across nodes, {name} transfer GB/s / raw loopback TCP GB/s",
                    c.ratio(tcp, tr), note))
    tq, tr_ = c.dig(ph.get("qsrv-nodes", {}), "nodes", "transfer_s"), \
        c.dig(ph.get("ray-nodes", {}), "nodes", "transfer_s")
    out.append(("across nodes, qsrv / Ray transfer time", c.ratio(tq, tr_), "< 1: qsrv faster"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qubits", type=int, default=24, help="vector of 2^N complex128")
    parser.add_argument("--quick", action="store_true", help="2^20 and 3 repetitions")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed repetitions per case (default 7; 3 with --quick)")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases, of {','.join(PHASES)}")
    parser.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per phase (default 240; 90 with --quick)")
    parser.add_argument("--write-md", action="store_true",
                        help="replace the results block in benchmarks/README.md")
    parser.add_argument("--from-json", metavar="PATH",
                        help="print (and with --write-md, paste) the table of a saved run")
    parser.add_argument("--child", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n, args.repeat, args.out)
        return
    if args.from_json:
        res = c.load_run(args.from_json)
        print(render(res))
        if args.write_md:
            c.publish(res, render(res), TAG, heading="### Latest run")
        return
    qubits = 20 if args.quick and args.qubits == 24 else args.qubits
    repeat = args.repeat or (3 if args.quick else 7)
    timeout = args.timeout or (90.0 if args.quick else 240.0)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")
    n = 1 << qubits
    res = c.new_run("objects", qubits=qubits, n=n, nbytes=n * 16, repeat=repeat,
                    mode="quick" if args.quick else "full", phases={})
    print(f"2^{qubits} complex128 ({c.fmt_bytes(n * 16)}), repeat {repeat}, "
          f"load average {res['loadavg_start']}", flush=True)
    t0 = time.perf_counter()
    env = c.child_env(OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0")
    with tempfile.TemporaryDirectory(prefix="bench-objects-") as tmp:

        def run(phase: str, label: str) -> dict[str, Any]:
            return c.run_child(__file__, ["--child", phase, "--n", str(n), "--repeat",
                                          str(repeat)], label, timeout, Path(tmp), env)

        for phase in PHASES:
            if phase in phases:
                res["phases"][phase] = run(phase, phase)
        if "baseline" in phases and len(phases) > 1:  # the machine again, after the systems
            res["phases"]["baseline_end"] = run("baseline", "baseline_end")
    res["limits"] = limits(res["phases"])
    derive_overheads(res)
    res["seconds"] = time.perf_counter() - t0
    res["loadavg_end"] = c.loadavg()
    res["ratios"] = [{"ratio": a, "value": b, "note": c_} for a, b, c_ in ratios(res)]
    table = render(res)
    print()
    print(table)
    print(f"results: {c.save_run(res, args.json)}")
    if args.write_md:
        c.publish(res, table, TAG, heading="### Latest run")


if __name__ == "__main__":
    main()
