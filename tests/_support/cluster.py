"""A real cluster started through the CLI (``qsrv scheduler``, ``qsrv worker``), as an operator
starts one; and helpers to run the CLI against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

from tests._support.processes import stop_processes

TOKEN = "test-cluster-token"


def cli_env(**extra: str) -> dict[str, str]:
    """This environment with the cluster token and without an inherited cluster address."""
    env = dict(os.environ, QSRV_TOKEN=TOKEN, **extra)
    env.pop("QSRV_ADDRESS", None)
    return env


def qsrv_cli(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    """``python -m qsrv ARGS`` as a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "qsrv", *args], text=True,
                            env=env or cli_env(), **kw)


def cli_status(address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qsrv", "status", "--address", address,
                           *extra], env=cli_env(), capture_output=True, text=True, timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A scheduler (started at once) and named workers; ``stop()`` or ``with`` ends them."""

    def __init__(self, port: int = 0, *scheduler_args: str) -> None:
        self.workers: dict[str, subprocess.Popen[str]] = {}
        self.scheduler_args = scheduler_args
        self.start_scheduler(port)

    def start_scheduler(self, port: int = 0) -> None:
        """Start the scheduler (again, after the last one was stopped or killed)."""
        if hasattr(self, "scheduler"):
            stop_processes([self.scheduler])
        self.scheduler = qsrv_cli("scheduler", "--port", str(port), "--heartbeat-timeout", "3",
                                  *self.scheduler_args, stdout=subprocess.PIPE)
        assert self.scheduler.stdout is not None
        line = self.scheduler.stdout.readline()
        assert line.startswith("qsrv scheduler listening on "), line
        self.address = line.split()[-1]

    def worker(self, name: str, *args: str, address: str | None = None) -> subprocess.Popen[str]:
        """Start worker ``name`` (``qsrv worker --name NAME ARGS``), joined to ``address``
        (the scheduler's by default)."""
        proc = qsrv_cli("worker", "--address", address or self.address, "--name", name, *args)
        self.workers[name] = proc
        return proc

    def status(self) -> dict[str, Any]:
        out = cli_status(self.address, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def ready(self, names: set[str]) -> bool:
        """Whether every worker in ``names`` is registered and has an executor up."""
        workers = self.status()["workers"]
        return {w["name"] for w in workers if w["executors"] > 0} >= names

    def stop(self) -> None:
        stop_processes(list(self.workers.values()))
        stop_processes([self.scheduler])

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
