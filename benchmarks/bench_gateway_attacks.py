"""A gateway under attack: how long a second user's simplest request takes while a first user
sends hostile archives or floods the queue.

A gateway process (``qsrv gateway``, no cluster) with two users. The victim asks ``GET
/v1/jobs?limit=1`` in a loop, one request at a time on a kept-alive connection, and every
answer's latency is recorded; the attacker meanwhile:

- ``long name``: uploads, 4 at a time, a 1 MB gzip whose tar starts with a GNU long-name
  header declaring 2 GiB (tarfile alone reads the declared size into memory);
- ``bz2 of zeros``: a ~300-byte bz2 of 250 MiB of zeros;
- ``inflated bomb``: a bz2 tar whose one member holds 200 MiB of zeros, which must all be
  inflated to check the archive (the most CPU an archive within the limits can cost);
- ``job flood``: submits 9,000 jobs (16 at a time) of a program that sleeps, so all but four
  wait queued (with the default quota of 1,000 queued jobs, and with it raised to 10,000);
- ``9,000 queued``: nothing more: the queue the flood left behind.

Reported: the victim's median, 99th percentile and worst latency in each phase, what the
attacker's requests were answered, and the gateway's memory. Timings are the machine's; read
them against the baseline of the same run.

    python benchmarks/bench_gateway_attacks.py [--seconds 6] [--json PATH] [--write-md]

``--write-md`` pastes the table into benchmarks/README.md (``bench_gateway_attacks`` markers).
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import http.client
import json
import shutil
import statistics
import tarfile
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _common as c
import psutil

from qsrv.gateway import add_user, start_gateway_process
from qsrv.gateway._archive import pack_directory


class Http:
    """One kept-alive HTTP connection (the victim's, or one of the attacker's)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=120)
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers={**self.headers,
                                                                  **(headers or {})})
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnects on the next request
            return 0, b""


def multipart(archive: bytes, title: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    meta = json.dumps({"title": title, "entrypoint": "main.py"}).encode()
    body = b"".join([
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
        "Content-Type: application/json\r\n\r\n".encode(), meta, b"\r\n",
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; "
        "filename=\"a.tar\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
        archive, f"\r\n--{boundary}--\r\n".encode()])
    return body, f"multipart/form-data; boundary={boundary}"


def long_name_bomb() -> bytes:
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = 2 << 30
    # ~1 MB compressed, as in the report: incompressible filler after the header
    return gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT) + random_bytes(1 << 20), 9)


def random_bytes(n: int) -> bytes:
    import os

    return os.urandom(n)


def zeros_bomb() -> bytes:
    return bz2.compress(bytes(250 << 20), 9)


def inflated_bomb() -> bytes:
    size = 200 << 20
    info = tarfile.TarInfo("main.py")
    info.size = size
    return bz2.compress(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(size) + bytes(1024), 9)


class Victim:
    """Asks the simplest question in a loop; records each answer's latency."""

    def __init__(self, url: str, token: str) -> None:
        self.http = Http(url, token)
        self.samples: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            status, _ = self.http.request("GET", "/v1/jobs?limit=1")
            elapsed = time.perf_counter() - t0
            if status == 200:
                self.samples.append(elapsed)
            else:
                self.errors += 1
            self._stop.wait(0.005)

    def measure(self, seconds: float, attack: Callable[[threading.Event], Any] | None
                ) -> dict[str, Any]:
        self.samples = []
        self.errors = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        done = threading.Event()
        outcome: dict[str, Any] = {}
        if attack is None:
            time.sleep(seconds)
        else:
            t0 = time.perf_counter()
            outcome = attack(done) or {}
            outcome["attack_s"] = round(time.perf_counter() - t0, 2)
            time.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
        self._stop.set()
        self._thread.join(30)
        ms = sorted(s * 1000 for s in self.samples)
        return {"requests": len(ms), "errors": self.errors,
                "median_ms": round(statistics.median(ms), 2) if ms else None,
                "p99_ms": round(ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))], 2)
                if ms else None,
                "max_ms": round(ms[-1], 2) if ms else None, **outcome}


def upload_attack(url: str, token: str, archive: bytes, count: int, parallel: int = 4,
                  ) -> Callable[[threading.Event], dict[str, Any]]:
    def attack(done: threading.Event) -> dict[str, Any]:
        answers: Counter[int] = Counter()
        lock = threading.Lock()
        left = [count]

        def one() -> None:
            http = Http(url, token)
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                body, ctype = multipart(archive, f"bomb-{uuid.uuid4().hex[:8]}")
                status, _ = http.request("POST", "/v1/programs", body,
                                         {"Content-Type": ctype})
                with lock:
                    answers[status] += 1

        threads = [threading.Thread(target=one) for _ in range(parallel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"answers": dict(answers)}

    return attack


def flood_attack(url: str, token: str, count: int, parallel: int = 16,
                 ) -> Callable[[threading.Event], dict[str, Any]]:
    def attack(done: threading.Event) -> dict[str, Any]:
        answers: Counter[int] = Counter()
        lock = threading.Lock()
        left = [count]
        body = json.dumps({"program": "sleeper", "arguments_json": {}}).encode()

        def one() -> None:
            http = Http(url, token)
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                status, _ = http.request("POST", "/v1/jobs", body,
                                         {"Content-Type": "application/json"})
                with lock:
                    answers[status] += 1

        threads = [threading.Thread(target=one) for _ in range(parallel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"answers": dict(answers)}

    return attack


def gateway(root: Path, *extra: str) -> tuple[Any, str, str, str]:
    data = root / "data"
    _, attacker = add_user(data, "mallory")
    _, victim = add_user(data, "victim")
    proc, url = start_gateway_process(None, None, data, extra_args=(
        "--job-sandbox", "none", *extra))
    return proc, url, attacker, victim


def run(seconds: float) -> dict[str, Any]:
    res = c.new_run("gateway_attacks", seconds=seconds)
    phases: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="qsrv-bench-attacks-"))
    try:
        proc, url, attacker, victim_token = gateway(root / "a")
        me = psutil.Process(proc.pid)
        victim = Victim(url, victim_token)
        rss0 = me.memory_info().rss
        phases["baseline"] = victim.measure(seconds, None)
        for name, archive in (("long name", long_name_bomb()), ("bz2 of zeros", zeros_bomb()),
                              ("inflated bomb", inflated_bomb())):
            peak = [me.memory_info().rss]

            def watch(stop: threading.Event, peak: list[int] = peak) -> None:
                while not stop.wait(0.02):
                    peak[0] = max(peak[0], me.memory_info().rss)

            stop = threading.Event()
            watcher = threading.Thread(target=watch, args=(stop,), daemon=True)
            watcher.start()
            phases[name] = victim.measure(seconds, upload_attack(
                url, attacker, archive, 8 if name == "inflated bomb" else 40))
            stop.set()
            watcher.join()
            phases[name].update(archive_bytes=len(archive),
                                gateway_rss_peak_mib=round(peak[0] / 2**20, 1))
        phases["rss_mib_before_uploads"] = round(rss0 / 2**20, 1)
        c.kill([me])
        proc.wait()
        for quota in (1000, 10_000):
            proc, url, attacker, victim_token = gateway(
                root / f"q{quota}", "--max-queued-jobs-per-user", str(quota))
            sleeper = root / f"sleeper{quota}"
            sleeper.mkdir()
            (sleeper / "main.py").write_text("import time\ntime.sleep(3600)\n")
            body, ctype = multipart(pack_directory(sleeper), "sleeper")
            assert Http(url, attacker).request("POST", "/v1/programs", body,
                                               {"Content-Type": ctype})[0] == 201
            victim = Victim(url, victim_token)
            phases[f"job flood (quota {quota})"] = victim.measure(
                seconds, flood_attack(url, attacker, 9000))
            phases[f"{quota if quota < 9000 else 9000} queued, quota {quota}"] = \
                victim.measure(seconds, None)
            c.kill([psutil.Process(proc.pid), *c.descendants(proc.pid)])
            proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["phases"] = phases
    return res


def table(res: dict[str, Any]) -> str:
    lines = ["| phase | victim median ms | p99 ms | worst ms | requests | attacker's answers |",
             "|---|---:|---:|---:|---:|---|"]
    for name, p in res["phases"].items():
        if not isinstance(p, dict):
            continue
        answers = p.get("answers", {})
        extra = ", ".join(f"{n}x {s}" for s, n in sorted(answers.items()))
        if "gateway_rss_peak_mib" in p:
            extra += f"; gateway RSS peak {p['gateway_rss_peak_mib']} MiB"
        lines.append(f"| {name} | {p['median_ms']} | {p['p99_ms']} | {p['max_ms']} | "
                     f"{p['requests']} | {extra} |")
    lines.append(f"\nGateway RSS before the uploads: {res['phases']['rss_mib_before_uploads']} "
                 f"MiB. {c.describe(res['machine'])}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="how long each phase measures the victim")
    parser.add_argument("--json", type=Path, help="write the run here instead of results/runs/")
    parser.add_argument("--from-json", type=Path, help="print a saved run")
    parser.add_argument("--write-md", action="store_true",
                        help="paste the table into benchmarks/README.md")
    args = parser.parse_args()
    res = c.load_run(args.from_json) if args.from_json else run(args.seconds)
    if not args.from_json:
        print(f"wrote {c.save_run(res, args.json)}")
    text = table(res)
    print(text)
    if args.write_md:
        c.publish(res, text, "bench_gateway_attacks",
                  heading="## A gateway under attack\n\n" + _INTRO)


_INTRO = """A second user's simplest request (`GET /v1/jobs?limit=1`, one at a time) while a first
user sends hostile archives or floods the queue (`bench_gateway_attacks.py`; what each phase
does is in its docstring). Before the archive and queue work, the same attacks took the
gateway from 177 MiB to 2.2 GiB and froze it for 13 s (long name), froze every request for
about a second per upload (bz2 of zeros), and made this request take 475 ms at 9,000 queued
jobs (2 ms with none)."""


if __name__ == "__main__":
    main()
