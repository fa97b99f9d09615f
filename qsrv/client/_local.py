"""The embedded local cluster: a scheduler and one worker agent as child processes.

Started by `qsrv.init()` with no address; stopped by `qsrv.shutdown()` or at exit. Both
children exit on their own if this process dies (the scheduler watches its parent; the worker
follows the scheduler).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from qsrv.errors import ConnectionLostError
from qsrv.scheduler import new_token

_START_TIMEOUT = 60.0


class LocalCluster:
    def __init__(self, *, num_cpus: float | None = None, num_gpus: int | None = None,
                 memory: int | str | None = None, resources: dict[str, float] | None = None,
                 gateway: bool = False, data_dir: str | None = None) -> None:
        self.token = new_token()
        self.address = ""
        env = dict(os.environ, QSRV_TOKEN=self.token)
        # Executors must import what the driver imports (functions pickled by reference):
        # the driver's own path entries, not the interpreter's (those the children have).
        own = [p for p in sys.path if p and os.path.isdir(p) and not _is_interpreter_path(p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*own, os.getcwd()]))
        env.pop("QSRV_ADDRESS", None)
        self._env = env
        # Everything on this machine joins over a private Unix socket (fewer costs per hop than
        # loopback TCP); the TCP port stays open for what joins from elsewhere.
        self._socket_dir = tempfile.mkdtemp(prefix="qsrv-")
        socket_path = os.path.join(self._socket_dir, "scheduler.sock")
        ready_read, ready_write = os.pipe()  # the scheduler writes where it listens, as JSON
        try:
            self.scheduler = subprocess.Popen(
                [sys.executable, "-m", "qsrv", "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--unix", socket_path, "--exit-with-parent", str(os.getpid()),
                 "--ready-fd", str(ready_write)],
                env=env, stdout=subprocess.DEVNULL, pass_fds=(ready_write,))
        finally:
            os.close(ready_write)
        try:
            self.tcp_address = _read_address(self.scheduler, ready_read)
            self.address = f"unix:{socket_path}"
            args = [sys.executable, "-m", "qsrv", "worker", "--address", self.address,
                    "--name", "local", "--reconnect-timeout", "0"]
            if num_cpus is not None:
                args += ["--cpus", str(num_cpus)]
            if num_gpus is not None:
                args += ["--gpus", str(num_gpus)]
            if memory is not None:
                args += ["--memory", str(memory)]
            if resources:
                args += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
            self.worker = subprocess.Popen(args, env=env)
        except BaseException:
            self.scheduler.kill()
            raise
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_url = self.gateway_token = ""
        if gateway:
            self._start_gateway(data_dir)

    def _start_gateway(self, data_dir: str | None) -> None:
        from qsrv.gateway import default_data_dir, ensure_local_user, start_gateway_process

        try:
            directory = data_dir or str(default_data_dir())
            self.gateway_token = ensure_local_user(directory)
            self.gateway, self.gateway_url = start_gateway_process(
                self.address, self.token, directory)
        except BaseException:
            self.stop()
            raise

    def ensure_gateway(self, data_dir: str | None = None) -> None:
        """Start the gateway of this running cluster unless one serves already (programs and
        jobs after tasks). A failure raises and leaves the cluster running."""
        if self.gateway is not None and self.gateway.poll() is None:
            return
        from qsrv.gateway import default_data_dir, ensure_local_user, start_gateway_process

        directory = data_dir or str(default_data_dir())
        token = ensure_local_user(directory)
        self.gateway, self.gateway_url = start_gateway_process(self.address, self.token,
                                                               directory)
        self.gateway_token = token

    def check_alive(self) -> None:
        for name, proc in (("scheduler", self.scheduler), ("worker", self.worker)):
            if proc.poll() is not None:
                raise ConnectionLostError(
                    f"the local {name} exited with code {proc.returncode} while starting")

    def stop(self) -> None:
        gateway: subprocess.Popen[bytes] | None = getattr(self, "gateway", None)
        procs: list[subprocess.Popen[Any]] = [gateway] if gateway is not None else []
        for proc in [*procs, self.worker, self.scheduler]:  # the worker stops its executors
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self._socket_dir, ignore_errors=True)


def _is_interpreter_path(path: str) -> bool:
    real = os.path.realpath(path)
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return any(real == p or real.startswith(p + os.sep) for p in prefixes) and (
        "site-packages" in real or "lib" + os.sep + "python" in real)


def _read_address(proc: subprocess.Popen[Any], ready_fd: int) -> str:
    """The TCP address from the scheduler's ready line (EOF: it exited before listening)."""
    with os.fdopen(ready_fd, "r") as ready:
        line = ready.readline()
    if not line:
        raise ConnectionLostError(
            f"the local scheduler exited before listening (code {proc.wait()})")
    address: str = json.loads(line)["address"]
    return address
