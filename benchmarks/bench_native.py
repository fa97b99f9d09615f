"""Native vs pure-Python state-vector codec, on a 2^24-amplitude complex128 vector (256 MiB).

    python benchmarks/bench_native.py               # print the table (~40 s)
    python benchmarks/bench_native.py --write-md    # also update benchmarks/NATIVE.md
    python benchmarks/bench_native.py --from-json benchmarks/results/native.json

What is timed, for each implementation and for 1 and 2 threads:

* store: ``copy_into(dst, arr)`` (copy + checksum in one pass) then ``encode_header(arr,
  checksum=...)``: what the object store does to put a state vector into shared memory.
  (a) into a fresh anonymous mmap: every page faults on first touch; each trial waits
      ``--settle`` seconds first, because on these VMs freed memory goes back to the host
      within seconds and the cost of a fresh page depends on how long ago memory was freed;
  (b) into a pre-touched (warm) mmap.
* verify: ``checksum(raw)``, what ``decode(verify=True)`` costs on arrival.
* the machine's own limits in the same run: numpy.copyto (warm and fresh destination) and
  zlib.crc32, one thread each.

Warm figures are the best of ``--repeat`` runs, fresh ones the median of ``--rounds`` trials
(configurations interleaved so drift hits them alike). GB/s are 10^9 bytes per second.
"""

from __future__ import annotations

import argparse
import dataclasses
import mmap
import platform
import statistics
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import _common as c
import numpy as np

from qsrv.codec import _statevec
from qsrv.codec._statevec_format import Codec

N_AMPLITUDES = 1 << 24
MD_PATH = c.HERE / "NATIVE.md"
TAG = "bench_native"


@dataclass
class Row:
    case: str
    impl: str
    threads: int | str
    gbps: float
    ratio: str = ""  # native / python, same case and threads


def _gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / c.GB


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _warm_mmap(nbytes: int) -> mmap.mmap:
    m = mmap.mmap(-1, nbytes)
    np.frombuffer(m, np.uint8)[:] = 1  # touch every page
    return m


def store(codec: Codec, arr: Any, dst: Any, threads: int) -> bytes:
    crc = codec.copy_into(dst, arr, threads=threads)
    return codec.encode_header(arr, checksum=crc)


def run(repeat: int, rounds: int, settle: float) -> tuple[list[Row], dict[str, str]]:
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal(N_AMPLITUDES) + 1j * rng.standard_normal(N_AMPLITUDES))
    arr = arr.astype(np.complex128)
    nbytes = arr.nbytes
    header, raw = _statevec.codec("python").encode(arr)
    expected_header = header

    impls: list[Literal["native", "python"]] = ["python"]
    try:
        _statevec.codec("native")
        impls.insert(0, "native")
    except ImportError:
        pass
    codecs = {name: _statevec.codec(name) for name in impls}
    configs = [(name, t) for name in impls for t in (1, 2)]
    rows: list[Row] = []

    def best(fn: Callable[[], object]) -> float:
        return _gbps(nbytes, c.best_time(fn, repeat)[0])

    # Machine limits.
    dst = _warm_mmap(nbytes)
    d = np.frombuffer(dst, np.uint8)
    s = np.frombuffer(raw, np.uint8)
    rows.append(Row("numpy.copyto, warm dst", "numpy", 1, best(partial(np.copyto, d, s))))
    rows.append(Row("zlib.crc32", "zlib", 1, best(partial(zlib.crc32, raw))))

    # Checksum only (decode's verify).
    for name, t in configs:
        rows.append(Row("verify: checksum", name, t,
                        best(partial(codecs[name].checksum, raw, threads=t))))

    # Store into warm pages.
    for name, t in configs:
        assert store(codecs[name], arr, dst, t) == expected_header
        rows.append(Row("store: copy+checksum+header, warm dst", name, t,
                        best(partial(store, codecs[name], arr, dst, t))))
    del d
    dst.close()

    # Store into fresh pages: a new mapping per trial, after the same settle time.
    def fill_numpy(m: mmap.mmap, _threads: int) -> None:
        target = np.frombuffer(m, np.uint8)
        np.copyto(target, s)
        del target  # release the export before the mapping closes

    def fill_with(codec: Codec) -> Callable[[mmap.mmap, int], object]:
        return lambda m, threads: store(codec, arr, m, threads)

    fills: dict[str, Callable[[mmap.mmap, int], object]] = {
        name: fill_with(codecs[name]) for name in impls
    }
    fresh: dict[tuple[str, int], list[float]] = {key: [] for key in [*configs, ("numpy", 1)]}
    for _ in range(rounds):
        for impl, nthreads in fresh:
            fill = fill_numpy if impl == "numpy" else fills[impl]
            time.sleep(settle)
            with mmap.mmap(-1, nbytes) as m:
                fresh[impl, nthreads].append(_time(partial(fill, m, nthreads)))
    for (impl, nthreads), times in fresh.items():
        case = "numpy.copyto, fresh dst" if impl == "numpy" else (
            "store: copy+checksum+header, fresh dst")
        rows.append(Row(case, impl, nthreads, _gbps(nbytes, statistics.median(times))))

    _add_ratios(rows)
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "cpu": platform.processor() or platform.machine(),
        "pclmul": _simd(),
        "settle_s": str(settle),
        "rounds": str(rounds),
        "repeat": str(repeat),
    }
    return rows, info


def _simd() -> str:
    try:
        from qsrv.codec import _native
    except ImportError:
        return "native not built"
    return "yes" if _native.SIMD else "no (native codec not used)"


def _add_ratios(rows: list[Row]) -> None:
    by_key = {(r.case, r.impl, r.threads): r for r in rows}
    for r in rows:
        if r.impl == "native":
            py = by_key.get((r.case, "python", r.threads))
            if py is not None:
                r.ratio = f"{r.gbps / py.gbps:.2f}x"


def table(rows: list[Row]) -> str:
    lines = ["| case | impl | threads | GB/s | native/python |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r.case} | {r.impl} | {r.threads} | {r.gbps:.2f} | {r.ratio} |" for r in rows]
    return "\n".join(lines)


def render(res: dict[str, Any]) -> str:
    rows = [Row(**r) for r in res["rows"]]
    return "\n".join([
        f"2^24 complex128 amplitudes ({c.fmt_bytes(N_AMPLITUDES * 16)}), measured "
        f"{res['measured']}; " + ", ".join(f"{k} {v}" for k, v in res["info"].items()),
        "",
        table(rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm runs per config (best)")
    parser.add_argument("--rounds", type=int, default=5, help="fresh trials per config (median)")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds before a fresh trial")
    parser.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    parser.add_argument("--write-md", action="store_true", help=f"update {MD_PATH.name}")
    parser.add_argument("--from-json", metavar="PATH",
                        help="print (and with --write-md, paste) the table of a saved run")
    args = parser.parse_args()
    if args.from_json:
        res = c.load_run(args.from_json)
    else:
        t0 = time.perf_counter()
        res = c.new_run("native", measured=time.strftime("%Y-%m-%d %H:%M"))
        rows, info = run(args.repeat, args.rounds, args.settle)
        res["loadavg_end"] = c.loadavg()
        info["load_1min"] = f"{res['loadavg_start'].split()[0]} -> {res['loadavg_end'].split()[0]}"
        res.update(rows=[dataclasses.asdict(r) for r in rows], info=info,
                   seconds=time.perf_counter() - t0)
    text = render(res)
    print(text)
    if not args.from_json:
        print(f"\n({res['seconds']:.0f} s; wrote {c.save_run(res, args.json)})")
    if args.write_md:
        c.publish(res, text, TAG, md=MD_PATH)


if __name__ == "__main__":
    main()
