"""A real cluster started through the CLI, for integration tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

TOKEN = "test-cluster-token"


def qsrv_cli(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "qsrv", *args], text=True,
                            env=env or cli_env(), **kw)


def cli_env() -> dict[str, str]:
    env = dict(os.environ, QSRV_TOKEN=TOKEN)
    env.pop("QSRV_ADDRESS", None)
    return env


def cli_status(address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qsrv", "status", "--address", address,
                           *extra], env=cli_env(), capture_output=True, text=True, timeout=30)


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, port: int = 0) -> None:
        self.workers: dict[str, subprocess.Popen[str]] = {}
        self.start_scheduler(port)

    def start_scheduler(self, port: int = 0) -> None:
        self.scheduler = qsrv_cli("scheduler", "--port", str(port), "--heartbeat-timeout", "3",
                               stdout=subprocess.PIPE)
        assert self.scheduler.stdout is not None
        line = self.scheduler.stdout.readline()
        assert line.startswith("qsrv scheduler listening on "), line
        self.address = line.split()[-1]

    def worker(self, name: str, *args: str) -> None:
        self.workers[name] = qsrv_cli("worker", "--address", self.address, "--name", name, *args)

    def status(self) -> dict[str, Any]:
        out = cli_status(self.address, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def ready(self, names: set[str]) -> bool:
        workers = self.status()["workers"]
        return {w["name"] for w in workers if w["executors"] > 0} >= names

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


