"""A whole deployment on loopback, as an operator starts one: ``qsrv scheduler``,
``qsrv worker`` and a gateway joined to them, each a process of its own; users alice and bob
exist, alice also with a password."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qsrv.gateway import add_user, start_gateway_process
from tests._support.processes import Proc, stop_process

ALICE_PASSWORD = "correct horse battery staple"


@dataclass
class Deployment:
    url: str
    data_dir: Path
    alice: str  # tokens
    bob: str
    cluster_address: str


def set_password(data_dir: Path, name: str, password: str) -> None:
    """As an operator does: ``qsrv user passwd NAME --password-stdin``."""
    done = subprocess.run(
        [sys.executable, "-m", "qsrv", "user", "passwd", name, "--password-stdin",
         "--data-dir", str(data_dir)], input=password + "\n", capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, done.stderr


@contextmanager
def deployment(root: Path, cpus: int = 2) -> Iterator[Deployment]:
    """The deployment, its gateway's data under ``root``; stopped in the reverse order of
    starting: the gateway first (it ends its jobs), then the worker, then the scheduler."""
    cluster_token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSRV_")}
    env["QSRV_TOKEN"] = cluster_token
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "qsrv", "scheduler", "--port", "0"], env=env,
        stdout=subprocess.PIPE, text=True)
    procs: list[Proc] = [scheduler]
    try:
        assert scheduler.stdout is not None
        address = scheduler.stdout.readline().split()[-1]
        procs.insert(0, subprocess.Popen(
            [sys.executable, "-m", "qsrv", "worker", "--address", address, "--cpus",
             str(cpus)], env=env))
        data_dir = root / "gateway"
        gateway, url = start_gateway_process(address, cluster_token, data_dir)
        procs.insert(0, gateway)
        _, alice = add_user(data_dir, "alice")
        _, bob = add_user(data_dir, "bob")
        set_password(data_dir, "alice", ALICE_PASSWORD)
        yield Deployment(url, data_dir, alice, bob, address)
    finally:
        for proc in procs:
            stop_process(proc, 30)
