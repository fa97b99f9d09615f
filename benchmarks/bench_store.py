"""Object store: put/get of a 2^24 complex128 state vector (256 MiB) into a pre-touched arena,
against numpy.copy (fresh pages) and numpy.copyto (warm destination). One run, median of
``--repeat``; the machine is shared, so read ratios, not absolute figures.

    python benchmarks/bench_store.py [--qubits 24] [--repeat 5] [--json PATH]

The run is written to benchmarks/results/runs/store-<time>.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common as c
import numpy as np

from qsrv.codec import _statevec
from qsrv.store import ObjectStore, StoreClient


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--qubits", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    args = parser.parse_args()
    res = c.new_run("store", qubits=args.qubits, repeat=args.repeat)
    arr = np.ones(1 << args.qubits, dtype=np.complex128) * (1 + 1j)
    gb = arr.nbytes / c.GB

    def _median_s(fn: Callable[[], object], repeat: int) -> float:
        return c.median_time(fn, repeat, warmup=0)

    rows: list[tuple[str, float]] = []

    t0 = time.perf_counter()
    store = ObjectStore(2 * arr.nbytes + (1 << 20), tempfile.mkdtemp(prefix="bench-store-"))
    rows.append(("arena create + touch (2x vector)", 2 * gb / (time.perf_counter() - t0)))
    client = StoreClient(store.name)
    oid = iter(range(1 << 30))

    def put_decref() -> None:
        i = next(oid)
        store.put(i, None, arr, holder="b")
        store.decref(i, "b")

    rows.append((f"store.put (copy_into + CRC, {_statevec.IMPLEMENTATION})",
                 gb / _median_s(put_decref, args.repeat)))
    loc = store.put(-1 & 0xFFFF, None, arr, holder="b")
    rows.append(("store.get + decode (no verify), zero copy",
                 gb / _median_s(lambda: _statevec.decode(*store.get(loc.object_id),
                                                          verify=False), args.repeat)))
    rows.append(("StoreClient.array (verify CRC)",
                 gb / _median_s(lambda: client.array(loc, verify=True), args.repeat)))
    rows.append(("numpy.copy (fresh pages)", gb / _median_s(lambda: np.copy(arr), args.repeat)))
    dst = np.empty_like(arr)
    dst[:] = 0
    rows.append(("numpy.copyto (warm dst)",
                 gb / _median_s(lambda: np.copyto(dst, arr), args.repeat)))
    client.close()
    store.close()

    res.update(codec=_statevec.IMPLEMENTATION, loadavg_end=c.loadavg(),
               rows=[{"case": name, "gbps": rate} for name, rate in rows])
    print(f"2^{args.qubits} complex128 ({c.fmt_bytes(arr.nbytes)}), repeat {args.repeat}, "
          f"load average {res['loadavg_start']}, codec {_statevec.IMPLEMENTATION}")
    print("| case | GB/s |\n|---|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.2f} |" if rate < 1e4 else f"| {name} | {rate:.3g} |")
    print(f"wrote {c.save_run(res, args.json)}")


if __name__ == "__main__":
    main()
