"""qsrv, started and driven through its public API only (init, put, get, wait,
distribute_task, status, shutdown), so a benchmark reads the same whatever changes inside.

* `Local`: ``qsrv.init(num_cpus=2)``: the driver starts a scheduler and one worker agent with
  two executors as child processes.
* `Nodes`: a cluster started with the CLI (``qsrv scheduler --port 0`` and two
  ``qsrv worker --cpus 1 --resources node_X=1``, each with its own object store), joined with
  ``qsrv.init(address=...)``; ``task(fn, node="a")`` pins to ``target={"node_a": 1}``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil
from _common import WORKERS, cmdline, descendants


class Local:
    name = "qsrv"

    def __init__(self, workers: int = WORKERS) -> None:
        import qsrv

        self.qsrv = qsrv
        self._connect(workers)
        self.get = qsrv.get
        self.gather = qsrv.get
        self.put = qsrv.put

    def _connect(self, workers: int) -> None:
        self.qsrv.init(num_cpus=workers)
        self.setup = (f"qsrv.init(num_cpus={workers}): scheduler + 1 worker agent + "
                      f"{workers} executors")

    def task(self, fn: Callable[..., Any], *, resources: dict[str, float] | None = None,
             node: str | None = None) -> Callable[..., Any]:
        target = {f"node_{node}": 1} if node else {"cpu": 1, **(resources or {})}
        return self.qsrv.distribute_task(target=target)(fn)

    def ready(self, ref: Any) -> None:
        self.qsrv.wait([ref], num_returns=1)

    def queued(self) -> int | None:
        counts = self.qsrv.status()["tasks"]
        return int(counts["infeasible"] + counts["queued"] + counts["waiting"])

    def server_pids(self) -> dict[str, int]:
        # The local cluster's scheduler is the driver's child `python -m qsrv scheduler ...`.
        for proc in descendants():
            if cmdline(proc)[1:4] == ["-m", "qsrv", "scheduler"]:
                return {"scheduler": proc.pid}
        raise RuntimeError("no `qsrv scheduler` child process found")

    def role(self, proc: psutil.Process) -> str:
        args = cmdline(proc)[1:4]
        if args[:2] == ["-m", "qsrv"] and len(args) > 2:
            return {"scheduler": "scheduler", "worker": "worker agent"}.get(args[2], args[2])
        if args[:2] in (["-m", "qsrv.worker._executor"], ["-m", "qsrv.worker._standby"]):
            return "executors"  # an executor started ahead of its worker's registration too
        try:
            return proc.name() or "?"
        except psutil.Error:
            return "?"

    def shutdown(self) -> None:
        self.qsrv.shutdown()


class Nodes(Local):
    """Two nodes, node_a and node_b, one executor and one object store each."""

    def _connect(self, workers: int) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._logdir = Path(tempfile.mkdtemp(prefix="bench-qsrv-nodes-"))
        try:
            address, token = self._start_cli()
            self.qsrv.init(address=address, token=token)
            deadline = time.monotonic() + 60
            while len(self.qsrv.status().get("workers", [])) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"two workers did not join: {self.qsrv.status()}")
                time.sleep(0.1)
        except BaseException:
            self._stop_cli()
            raise
        self.setup = ("qsrv CLI: scheduler --port 0 + 2 x worker --cpus 1 --resources "
                      "node_X=1, driver qsrv.init(address=...)")

    def _start_cli(self) -> tuple[str, str]:
        token = secrets.token_urlsafe(24)
        env = {**os.environ, "QSRV_TOKEN": token}
        env.pop("QSRV_ADDRESS", None)

        def start(name: str, args: list[str]) -> Path:
            log = self._logdir / f"qsrv-{name}.log"
            self._logs.append(open(log, "wb"))  # noqa: SIM115 -- closed in _stop_cli
            self._procs.append(subprocess.Popen([sys.executable, "-m", "qsrv", *args],
                                                stdout=self._logs[-1],
                                                stderr=subprocess.STDOUT, env=env))
            return log

        log = start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0"])
        address = ""
        deadline = time.monotonic() + 60
        while not address:
            if time.monotonic() > deadline or self._procs[0].poll() is not None:
                raise RuntimeError("qsrv scheduler did not start: "
                                   + log.read_text(errors="replace")[-2000:])
            for line in log.read_text(errors="replace").splitlines():
                if "listening on " in line:
                    address = line.split("listening on ", 1)[1].split()[0]
            time.sleep(0.05)
        for tag in ("node_a", "node_b"):
            start(tag, ["worker", "--address", address, "--cpus", "1", "--executors", "1",
                        "--resources", f"{tag}=1", "--name", tag, "--reconnect-timeout", "0"])
        return address, token

    def _stop_cli(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in self._logs:
            f.close()

    def shutdown(self) -> None:
        try:
            self.qsrv.shutdown()
        finally:
            self._stop_cli()
