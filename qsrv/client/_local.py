"""The embedded local cluster: a scheduler and one worker agent as child processes.

Started by `qsrv.init()` with no address (when no ``qsrv start`` cluster runs); stopped by
`qsrv.shutdown()` or at exit. The scheduler and the worker start at the same time (see
`qsrv._local_cluster`). Stopping returns at once, while the processes wind down. Both children
also exit on their own if this process dies (the scheduler watches its parent; the worker
follows the scheduler).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from typing import Any

from qsrv._local_cluster import child_env, launch, new_token, worker_options
from qsrv.errors import ConnectionLostError

_STOP_GRACE = 10.0  # seconds a process has to stop before it is killed


class LocalCluster:
    def __init__(self, *, num_cpus: float | None = None, num_gpus: int | None = None,
                 memory: int | str | None = None, resources: dict[str, float] | None = None,
                 gateway: bool = False, data_dir: str | None = None,
                 log_to_driver: bool = False) -> None:
        self.token = new_token()
        self._env = child_env(self.token)
        if log_to_driver:  # its driver prints what tasks print: executors don't (_output.py)
            self._env["QSRV_TASK_OUTPUT"] = "driver"
        # Everything on this machine joins over a private Unix socket (fewer costs per hop than
        # loopback TCP); the TCP port stays open for what joins from elsewhere. The pid in the
        # directory's name lets a later agent remove it if this process is killed.
        self._socket_dir = tempfile.mkdtemp(prefix=f"qsrv-{os.getpid()}-")
        try:
            launched = launch(os.path.join(self._socket_dir, "scheduler.sock"), self._env,
                              worker_options(num_cpus, num_gpus, memory, resources),
                              parent=os.getpid())
        except BaseException:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            raise
        self.scheduler, self.worker = launched.scheduler, launched.worker
        self.address, self.tcp_address = launched.address, launched.tcp_address
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
        """Tell the processes to stop, and return. The scheduler goes at once (its state dies
        with this driver); the worker stops its executors and removes its store; a thread
        waits for them and kills what has not stopped within the grace period. If this
        process exits first, the worker still ends: it follows the scheduler."""
        gateway: subprocess.Popen[bytes] | None = getattr(self, "gateway", None)
        procs = [p for p in (gateway, self.scheduler, self.worker) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        threading.Thread(target=_reap, args=(procs,), name="qsrv-local-stop",
                         daemon=True).start()


def _reap(procs: list[subprocess.Popen[Any]]) -> None:
    for proc in procs:
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
