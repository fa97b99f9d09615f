"""Clusters on this machine: a scheduler and one worker agent, started as processes.

Two users of one launcher (`launch`):

- the embedded cluster of a driver (``qsrv.init()`` with no address, `qsrv.client`): child
  processes that end with the driver;
- the cluster ``qsrv start`` keeps running in the background for this OS user, until
  ``qsrv stop``; ``qsrv.init()`` joins it when it runs (`find_running`).

Both start the scheduler and the worker at the same time: the worker is told the scheduler's
Unix socket in advance and connects as soon as it listens, and its first executor starts
while it registers, so the three Python start-ups overlap.

The background cluster's state lives in a private directory of this user (`state_dir`:
``$XDG_RUNTIME_DIR/qsrv``, else ``/tmp/qsrv-UID``, mode 0700, refused when it is not this
user's or is open to others): the scheduler's socket, the token (0600), the cluster's
description (``cluster.json``, 0600) and its log. A description whose processes are gone is
stale and is removed when found.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from qsrv._retry import Deadline
from qsrv.errors import ConfigError, ConnectionLostError

__all__ = ["Launched", "RunningCluster", "child_env", "find_running", "launch", "new_token",
           "start_background", "state_dir", "stop_background", "worker_options"]

SOCKET, TOKEN, INFO, LOG, LOCK = "scheduler.sock", "token", "cluster.json", "cluster.log", "lock"


def new_token() -> str:
    return secrets.token_urlsafe(24)


# ---- starting the processes ----------------------------------------------------------------
def child_env(token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a local cluster's processes: the token, no inherited cluster
    address, and this process's own import paths (not the interpreter's, which the children
    have): executors must import what the driver imports (functions pickled by reference)."""
    env = dict(os.environ if base is None else base, QSRV_TOKEN=token)
    env.pop("QSRV_ADDRESS", None)
    own = [p for p in sys.path if p and os.path.isdir(p) and not _is_interpreter_path(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*own, os.getcwd()]))
    return env


def _is_interpreter_path(path: str) -> bool:
    real = os.path.realpath(path)
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return any(real == p or real.startswith(p + os.sep) for p in prefixes) and (
        "site-packages" in real or "lib" + os.sep + "python" in real)


@dataclass
class Launched:
    """The two processes of a local cluster, and where it listens."""

    scheduler: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    address: str  # unix:PATH, what this machine joins
    tcp_address: str  # 127.0.0.1:PORT


def worker_options(cpus: float | None = None, gpus: int | None = None,
                   memory: int | str | None = None, resources: dict[str, float] | None = None,
                   object_store_memory: int | str | None = None) -> list[str]:
    """``qsrv worker`` options for these sizes (None: detected, as the worker's defaults)."""
    args: list[str] = []
    if cpus is not None:
        args += ["--cpus", str(cpus)]
    if gpus is not None:
        args += ["--gpus", str(gpus)]
    if memory is not None:
        args += ["--memory", str(memory)]
    if resources:
        args += ["--resources", ",".join(f"{k}={v}" for k, v in resources.items())]
    if object_store_memory is not None:
        args += ["--object-store-memory", str(object_store_memory)]
    return args


def launch(socket_path: str, env: dict[str, str], worker_args: list[str], *,
           parent: int = 0, output: IO[Any] | None = None, detach: bool = False) -> Launched:
    """Start a scheduler listening on ``socket_path`` (and on loopback TCP) and a worker
    joined to it, at the same time; returns once the scheduler listens (the worker registers
    on its own). ``parent``: the scheduler exits when that process does. ``output``: where
    both write (default: inherited). ``detach``: new sessions, out of the caller's terminal
    and process group."""
    address = f"unix:{socket_path}"
    common: dict[str, Any] = {"env": env, "start_new_session": detach}
    if output is not None:
        common.update(stdout=output, stderr=output)
    ready_read, ready_write = os.pipe()  # the scheduler writes where it listens, as JSON
    try:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "qsrv", "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--unix", socket_path, "--ready-fd", str(ready_write),
             *(["--exit-with-parent", str(parent)] if parent else [])],
            pass_fds=(ready_write,), **{**common, "stdout": output or subprocess.DEVNULL})
    except BaseException:
        os.close(ready_read)
        raise
    finally:
        os.close(ready_write)
    try:
        # The worker waits for the socket (--connect-timeout) and exits with the scheduler.
        worker = subprocess.Popen(
            [sys.executable, "-m", "qsrv", "worker", "--address", address, "--name", "local",
             "--reconnect-timeout", "0", "--connect-timeout", "60", *worker_args], **common)
    except BaseException:
        os.close(ready_read)
        scheduler.kill()
        raise
    try:
        tcp_address = _read_address(scheduler, ready_read)
    except BaseException:
        worker.kill()
        scheduler.kill()
        raise
    return Launched(scheduler, worker, address, tcp_address)


def _read_address(proc: subprocess.Popen[Any], ready_fd: int) -> str:
    """The TCP address from the scheduler's ready line (EOF: it exited before listening)."""
    with os.fdopen(ready_fd, "r") as ready:
        line = ready.readline()
    if not line:
        raise ConnectionLostError(
            f"the local scheduler exited before listening (code {proc.wait()})")
    address: str = json.loads(line)["address"]
    return address


# ---- the background cluster of `qsrv start` ------------------------------------------------
def state_dir() -> Path:
    """Where this user's background cluster lives (not created here)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "qsrv"
    return Path(tempfile.gettempdir()) / f"qsrv-{os.getuid()}"


def _private_dir(create: bool) -> Path | None:
    """The state directory, checked to be this user's alone (created 0700 if asked)."""
    path = state_dir()
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"{path} is not a private directory of this user (owner, mode or a link): it holds "
            f"the local cluster's token and socket. Remove it, or set XDG_RUNTIME_DIR")
    return path


@dataclass
class RunningCluster:
    """A background cluster, as ``cluster.json`` describes it (and its token)."""

    address: str
    tcp_address: str
    scheduler_pid: int
    worker_pid: int
    options: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    log: str = ""
    token: str = field(default="", repr=False)

    def alive(self) -> bool:
        return _is_ours(self.scheduler_pid) and _is_ours(self.worker_pid)


def _is_ours(pid: int) -> bool:
    """Whether ``pid`` is a live qsrv process (not another that got a recycled pid)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except OSError:
        return True  # no /proc to ask: trust the pid
    return b"qsrv" in cmdline and state != b"Z"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One `qsrv start`/`qsrv stop` at a time for this user."""
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> RunningCluster | None:
    try:
        info = json.loads((path / INFO).read_text())
        token = (path / TOKEN).read_text().strip()
        return RunningCluster(**{**info, "token": token})
    except (OSError, ValueError, TypeError):
        return None


def find_running() -> RunningCluster | None:
    """This user's background cluster when it runs; None otherwise. A description whose
    processes are gone is removed (with what is left of them)."""
    try:
        path = _private_dir(create=False)
    except ConfigError:
        return None  # not ours to use; `qsrv start` says why
    if path is None or not (path / INFO).exists():
        return None
    found = _read(path)
    if found is not None and found.alive() and os.path.exists(found.address[len("unix:"):]):
        return found
    with _locked(path):
        found = _read(path)  # another process may have started a new one meanwhile
        if found is not None and found.alive():
            return found
        _clean(path, found)
    return None


def _clean(path: Path, stale: RunningCluster | None) -> None:
    """Stop what is left of a cluster (its own processes only) and remove its files."""
    if stale is not None:
        for pid in (stale.worker_pid, stale.scheduler_pid):
            if _is_ours(pid):
                _terminate(pid, 10.0)
    for name in (INFO, TOKEN, SOCKET, LOG):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()


def _terminate(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = Deadline(grace)
    while _is_ours(pid):
        if deadline.expired():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = Deadline(grace)
        time.sleep(0.02)


def start_background(options: dict[str, Any], *, env: dict[str, str] | None = None
                     ) -> tuple[RunningCluster, bool]:
    """Start this user's background cluster with ``options`` (`worker_options`' arguments),
    or find the one that runs. Returns it and whether it was started now. The caller waits
    for the worker to register (see ``qsrv start``)."""
    path = _private_dir(create=True)
    assert path is not None
    with _locked(path):
        found = _read(path)
        if found is not None and found.alive():
            return found, False
        _clean(path, found)
        token = new_token()
        fd = os.open(path / TOKEN, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log_path = path / LOG
        with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                       "ab") as log:
            launched = launch(str(path / SOCKET), child_env(token, env),
                              worker_options(**options), output=log, detach=True)
        running = RunningCluster(launched.address, launched.tcp_address,
                                 launched.scheduler.pid, launched.worker.pid, dict(options),
                                 time.time(), str(log_path), token)
        info = {k: v for k, v in asdict(running).items() if k != "token"}
        tmp = path / f".{INFO}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.replace(tmp, path / INFO)
        return running, True


def stop_background(grace: float = 10.0) -> RunningCluster | None:
    """Stop this user's background cluster (the worker first, which stops its executors,
    then the scheduler) and remove its directory; returns what was stopped (None: none ran,
    though stale files are still cleaned)."""
    path = _private_dir(create=False)
    if path is None:
        return None
    with _locked(path):
        found = _read(path)
        running = found if found is not None and found.alive() else None
        if found is not None:
            for pid in (found.worker_pid, found.scheduler_pid):
                if _is_ours(pid):
                    _terminate(pid, grace)
        _clean(path, None)
        with contextlib.suppress(FileNotFoundError):
            (path / LOCK).unlink()
    with contextlib.suppress(OSError):  # left when it holds files that are not ours
        path.rmdir()
    return running
