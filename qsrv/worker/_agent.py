"""The worker agent: registers the node's resources and supervises executor subprocesses.

It is not on the per-task path: executors talk to the scheduler directly. The agent starts
them (``--executors`` at once, overlapping its registration; more when the scheduler asks,
i.e. when a task fits here and no executor is idle), replaces any that die (a crashing task
kills its executor, never the agent), kills them when told (cancel, timeout), and sends
heartbeats. What the node can simulate comes from a per-machine cache (`_probe`), so an idle
agent holds no simulator and spends no CPU.

Executors of a tenant's tasks (a gateway job's, SpawnTenantExecutor) are started apart: with a
credential derived for that tenant instead of the cluster token, without the agent's secrets
in their environment, and in a bubblewrap sandbox where it runs (`_confine`); they are not
replaced when they end (the scheduler asks again when the tenant needs one).

When the scheduler goes away the agent reconnects with jittered back-off for
``reconnect_timeout`` seconds; a refused token is final (AuthenticationError).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from qsrv._resources import normalize, parse_memory
from qsrv._retry import Backoff
from qsrv.errors import AuthenticationError, ConfigError, ConnectionLostError
from qsrv.protocol import (
    Connection,
    FreeObjects,
    Heartbeat,
    HoldObjects,
    KillExecutor,
    ObjectsCopied,
    RegisterWorker,
    RetireExecutor,
    RevokeCredentials,
    SpawnExecutor,
    SpawnTenantExecutor,
    WorkerAccepted,
    WorkerInfo,
    executor_credential,
)
from qsrv.store import (
    MAX_WAITING,
    MAX_WAITING_PER_HOST,
    ObjectStore,
    StoreService,
    sweep_stale,
)
from qsrv.transport import FramedProtocol, open_client
from qsrv.worker import _confine, _detect, _leftovers, _probe

log = logging.getLogger("qsrv.worker")
TENANT_CREDENTIAL_S = 30 * 86400.0  # how long an executor's tenant credential is valid
STORE_FRACTION = 0.3  # of the node's memory, for its object store unless told otherwise
_QUIET_RETRIES = 3.0  # seconds of failed connection attempts logged at INFO, then WARNING


@dataclass
class WorkerConfig:
    address: str
    token: str
    cpus: float | None = None
    gpus: int | None = None
    memory: int | str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    name: str = ""
    heartbeat_interval: float = 1.0
    executors: int = 1  # executors started with the agent; the scheduler asks for more on demand
    reconnect_timeout: float = 60.0  # keep trying to reach a lost scheduler this long; 0: exit
    connect_timeout: float | None = None  # to reach it the first time; None: reconnect_timeout
    object_store_memory: int | str | None = None  # default: STORE_FRACTION of the memory
    spill_dir: str | None = None  # default: a directory under the system's temp dir
    store_host: str = "127.0.0.1"  # where other nodes pull this node's objects from
    # connections waiting to authenticate on each store port, at most; from one address
    max_pending: int = MAX_WAITING
    max_pending_per_address: int = MAX_WAITING_PER_HOST

    def store_capacity(self) -> int:
        """The node store's capacity: as given, else a fraction of the memory offered, and
        never more than /dev/shm can hold."""
        if self.object_store_memory is not None:
            capacity = parse_memory(self.object_store_memory, name="--object-store-memory")
            if capacity < 1 << 20:
                raise ConfigError(f"--object-store-memory must be at least 1MiB, got "
                                  f"{self.object_store_memory!r}")
        else:
            memory = (parse_memory(self.memory) if self.memory is not None
                      else _detect.memory_bytes())
            capacity = int(memory * STORE_FRACTION)
        shm = os.statvfs("/dev/shm")
        room = shm.f_bavail * shm.f_frsize
        if capacity > room:
            if self.object_store_memory is not None:
                log.warning("--object-store-memory %s is more than /dev/shm holds (%d bytes); "
                            "using %d", self.object_store_memory, room, room)
            capacity = room
        return capacity

    def capacity(self) -> tuple[dict[str, int], list[str]]:
        """Normalised totals and the GPU device ids this node offers."""
        detected_gpus = _detect.gpu_ids()
        if self.gpus is None:
            gpu_ids = detected_gpus
        else:
            if self.gpus < 0:
                raise ConfigError(f"--gpus must be >= 0, got {self.gpus}")
            gpu_ids = (detected_gpus[: self.gpus] if len(detected_gpus) >= self.gpus
                       else [str(i) for i in range(self.gpus)])
            if self.gpus > len(detected_gpus):
                log.warning("--gpus %d given but %d NVIDIA GPU(s) detected; tasks will be "
                            "placed as if they existed", self.gpus, len(detected_gpus))
        cpus = self.cpus if self.cpus is not None else _detect.cpu_count()
        memory = self.memory if self.memory is not None else _detect.memory_bytes()
        for reserved in ("cpu", "gpu", "memory", "mem"):
            if reserved in self.resources:
                raise ConfigError(f"give {reserved!r} with its own option, not in --resources")
        totals = normalize({"cpu": cpus, "memory": memory, "gpu": len(gpu_ids),
                            **self.resources})
        return totals, gpu_ids


class WorkerAgent:
    """One node's agent. Each connection to the scheduler is a session: it registers, gets a
    worker id that holds for that session only, and only then sends anything else (executor
    requests, heartbeats, store reports) on that connection. Executors belong to a session and
    end with it."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.totals, self.gpu_ids = config.capacity()
        self.worker_id = 0  # this session's, once the scheduler accepted it; else 0
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.proto: FramedProtocol | None = None  # the registered connection of this session
        self._closed = asyncio.Event()  # this session's connection closed (or exit asked)
        self._exit = asyncio.Event()
        self._close_reason = ""
        self._stopping = False  # this session is ending: do not replace executors
        self._exiting = False  # the agent is ending: do not reconnect
        self._tasks: set[asyncio.Task[Any]] = set()
        self._standby: list[asyncio.Task[asyncio.subprocess.Process | None]] = []
        self._session_no = 0
        self._capabilities: dict[str, Any] | None = None
        self._probing = False
        self._killed: set[int] = set()  # executors killed as the scheduler asked
        self._retired: set[int] = set()  # ... of which not to be replaced
        self._confinement: _confine.Confinement | None = None  # made for the first tenant
        for path in sweep_stale():
            log.warning("removed the object store arena %s of an agent that died", path)
        for path in _leftovers.sweep_dirs([None, config.spill_dir]):
            log.info("removed %s, left by a qsrv process that died", path)
        self._spill = tempfile.TemporaryDirectory(prefix=f"qsrv-spill-{os.getpid()}-",
                                                  dir=config.spill_dir)
        # The arena grows as it is used (pages reserved once, kept warm), up to its capacity.
        self.store = StoreService(
            ObjectStore(config.store_capacity(), self._spill.name, grow=True), config.token,
            host=config.store_host, on_copied=self._copied, max_waiting=config.max_pending,
            max_waiting_per_host=config.max_pending_per_address)
        self._store_stats: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Join the cluster and supervise executors. When the scheduler goes away, stop the
        executors and reconnect with back-off for up to `reconnect_timeout` seconds. Raises
        AuthenticationError at once when the scheduler refuses the token (or TLS does not
        verify), ConnectionLostError when it cannot be reached in time."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._exit_requested)
        try:
            await self._run(loop)
        finally:
            self._stopping = True
            await self._stop_executors()
            for starting in self._standby:
                starting.cancel()
                if starting.done() and not starting.cancelled() \
                        and (proc := starting.result()) is not None:
                    _kill(proc.pid)
            self._standby.clear()
            self.store.close()
            self._spill.cleanup()

    def _backoff(self, timeout: float, loop: asyncio.AbstractEventLoop) -> Backoff:
        # Jittered: a hundred agents that lost the same scheduler do not return all at once.
        return Backoff(0.05, cap=5.0, jitter=True, timeout=timeout, clock=loop.time)

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        first = self.config.connect_timeout
        backoff = self._backoff(self.config.reconnect_timeout if first is None else first, loop)
        since = loop.time()  # when the scheduler was last reachable (or the agent started)
        while not self._exiting:
            try:
                await self._session()
            except ConnectionLostError as exc:  # never registered: keep backing off
                delay = backoff.next_delay()
                if delay is None or self._exiting:
                    raise
                # A scheduler starting alongside (a local cluster) is not there for a moment:
                # say so only if it lasts.
                level = logging.WARNING if loop.time() - since > _QUIET_RETRIES else logging.INFO
                log.log(level, "%s; retrying in %.1f s", exc, delay)
            else:  # a registered session ended: the back-off starts over
                if self._exiting or self.config.reconnect_timeout <= 0:
                    return
                backoff = self._backoff(self.config.reconnect_timeout, loop)
                since = loop.time()
                delay = backoff.next_delay() or 0.0
                log.warning("lost the scheduler; reconnecting for up to %g s",
                            self.config.reconnect_timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), delay)

    def _exit_requested(self) -> None:
        self._exiting = True
        self._exit.set()
        self._closed.set()

    async def _session(self) -> None:
        """One connection to the scheduler, until it closes; executors end with it.

        Returns after a session in which the scheduler accepted this worker. Raises
        ConnectionLostError when it could not connect or the connection closed before that,
        AuthenticationError when the scheduler refused the token (final: retrying cannot
        help)."""
        self._session_no += 1
        self.worker_id = self.store.worker_id = 0  # ids are per session
        self.proto = None
        self._close_reason = ""
        self._closed.clear()
        self._stopping = False
        self._prestart()
        if self._exiting:
            return

        def factory() -> FramedProtocol:
            return FramedProtocol(conn, on_messages=self._on_messages, on_close=self._on_close,
                                  on_open=self._on_open)

        conn = Connection(server=False, token=self.config.token, role="worker")
        proto = await open_client(self.config.address, factory)
        registered = False
        try:
            await self._closed.wait()
        finally:
            registered = self.proto is proto
            self._stopping = True
            self.proto = None
            self.worker_id = self.store.worker_id = 0
            await self._stop_executors()
            proto.close("")
        if self._exiting:
            return
        if isinstance(proto.error, AuthenticationError):
            raise AuthenticationError(
                f"cannot join the scheduler at {self.config.address}: {proto.error}. Check "
                f"the cluster token (QSRV_TOKEN or --token): it must be the scheduler's")
        if not registered:
            raise ConnectionLostError(self._close_reason or "the scheduler closed the connection "
                                      "before accepting this worker")
        self.store.forget_directory()  # the lost scheduler's directory is gone with it

    async def _stop_executors(self) -> None:
        for proc in list(self.children.values()):
            _kill(proc.pid)
        for proc in list(self.children.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)

    async def stop(self) -> None:
        """End the session (the agent then reconnects unless it is exiting)."""
        self._stopping = True
        await self._stop_executors()
        self._closed.set()

    # ---- scheduler messages ------------------------------------------------------------------
    def _on_open(self, proto: FramedProtocol) -> None:
        """The handshake is done (the connection authenticated): register, and nothing else
        until the scheduler accepts."""
        name = self.config.name or f"{socket.gethostname()}:{os.getpid()}"
        proto.send(RegisterWorker(name, self.totals, self.gpu_ids, os.getpid(),
                                  {"host": socket.gethostname(), "python": sys.version.split()[0],
                                   "store": self.store.info(),
                                   "gpus_detected": len(_detect.gpu_ids())}))

    def _on_messages(self, proto: FramedProtocol, messages: list[Any]) -> None:
        for msg in messages:
            if isinstance(msg, HoldObjects):
                self.store.hold(msg.ids)
            elif isinstance(msg, FreeObjects):
                self.store.free(msg.ids)
            elif isinstance(msg, RevokeCredentials):  # jobs that ended: their store access too
                self.store.revoke(msg.ids)
            elif isinstance(msg, WorkerAccepted):
                self._accepted(proto, msg.worker_id)
            elif isinstance(msg, SpawnExecutor):
                for _ in range(msg.count):
                    self._spawn()
            elif isinstance(msg, SpawnTenantExecutor):
                for _ in range(min(msg.count, 64)):
                    self._spawn(msg.tenant)
            elif isinstance(msg, KillExecutor) and msg.pid in self.children:
                log.info("killing executor %d: %s", msg.pid, msg.reason)
                self._killed.add(msg.pid)
                _kill(msg.pid)
            elif isinstance(msg, RetireExecutor) and msg.pid in self.children:
                log.info("stopping executor %d: %s", msg.pid, msg.reason)
                self._killed.add(msg.pid)
                self._retired.add(msg.pid)
                _kill(msg.pid)

    def _accepted(self, proto: FramedProtocol, worker_id: int) -> None:
        if proto.closed or self._stopping:
            return
        self.proto = proto
        self.worker_id = self.store.worker_id = worker_id
        count = self._up_front()
        for _ in range(count):
            self._spawn()
        log.info("registered as worker %d; %d executor(s) started, more on demand",
                 worker_id, count)
        self._background(self._heartbeat(proto))
        self._background(self._probe(proto))

    def _up_front(self) -> int:
        """Executors started when the worker registers; the scheduler asks for more
        (SpawnExecutor) when a task fits here and none is idle."""
        return max(0, self.config.executors)

    async def _probe(self, proto: FramedProtocol) -> None:
        """Tell the scheduler what this node can simulate: from the machine's cache, else
        probed once in a subprocess (never in the agent: it imports the simulator)."""
        if self._capabilities is None:
            if self._probing:
                return
            self._probing = True
            memory = self.totals.get("memory", 0)
            try:
                found = await asyncio.get_running_loop().run_in_executor(
                    None, _probe.cached_capabilities, memory, list(self.gpu_ids))
            finally:
                self._probing = False
            if found is None:
                return
            self._capabilities = found
            for text in found.get("warnings") or ():
                log.warning("%s", text)
        if self.proto is proto and not proto.closed:
            proto.send(WorkerInfo({"quantum": self._capabilities}))

    def _copied(self, oid: int) -> None:
        """A store thread pulled a copy: tell the scheduler's directory (from the loop)."""
        def send() -> None:
            proto = self.proto
            if proto is not None and not proto.closed:
                proto.send(ObjectsCopied([oid]))

        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the agent is ending
                self._loop.call_soon_threadsafe(send)

    def _on_close(self, proto: FramedProtocol, reason: str) -> None:
        if not self._stopping and not self._exiting and self.proto is proto:
            # A worker told to follow its scheduler (--reconnect-timeout 0, a local cluster's)
            # expects this: no warning then.
            level = logging.WARNING if self.config.reconnect_timeout > 0 else logging.INFO
            log.log(level, "scheduler connection closed (%s); stopping", reason)
        self._close_reason = reason
        self._closed.set()

    # ---- executors ---------------------------------------------------------------------------
    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _prestart(self) -> None:
        """Start the up-front executors' processes now, while the agent connects and
        registers: their Python start-up and imports overlap the registration. They wait for
        the worker id (qsrv.worker._standby)."""
        for _ in range(self._up_front() - len(self._standby)):
            self._standby.append(asyncio.ensure_future(self._start_standby()))

    async def _start_standby(self) -> asyncio.subprocess.Process | None:
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "qsrv.worker._standby", env=self._executor_env(),
                stdin=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            log.warning("cannot start an executor: %s", exc)
            return None

    def _executor_env(self, worker_id: int = 0) -> dict[str, str]:
        env = dict(os.environ, QSRV_TOKEN=self.config.token,
                   QSRV_STORE_SOCKET=self.store.socket_path)
        if worker_id:
            env["QSRV_WORKER_ID"] = str(worker_id)
        return env

    def _spawn(self, tenant: str = "") -> None:
        self._background(self._supervise(self._session_no, tenant))

    async def _executor(self) -> asyncio.subprocess.Process | None:
        """An executor of this session's worker: one started ahead if there is one, else a
        new one."""
        while self._standby:
            proc = await self._standby.pop(0)
            if proc is None or proc.returncode is not None or proc.stdin is None:
                continue
            try:
                proc.stdin.write(f"{self.config.address} {self.worker_id}\n".encode())
                proc.stdin.close()
            except (OSError, RuntimeError):  # it died meanwhile
                _kill(proc.pid)
                continue
            return proc
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "qsrv.worker._executor", self.config.address,
            str(self.worker_id), env=self._executor_env(self.worker_id),
            start_new_session=True)

    async def _tenant_executor(self, tenant: str) -> asyncio.subprocess.Process | None:
        """An executor of ``tenant``'s tasks only (see `_confine`)."""
        loop = asyncio.get_running_loop()
        if self._confinement is None:
            _confine.protect_self()  # its /proc entries hold the token: not for its user
            self._confinement = await loop.run_in_executor(None, _confinement)
        try:
            credential = executor_credential(self.config.token, tenant, f"w{self.worker_id}",
                                             time.time() + TENANT_CREDENTIAL_S)
        except ValueError as exc:
            log.warning("cannot start an executor for tenant %r: %s", tenant, exc)
            return None
        env = _confine.tenant_env(os.environ, self.config.token, credential)
        command = [sys.executable, "-m", "qsrv.worker._standby"]
        cwd = os.getcwd()
        confinement = self._confinement
        if confinement.available():
            address = self.config.address
            binds = (address[len("unix:"):],) if address.startswith("unix:") else ()
            command = confinement.wrap(command, cwd=cwd, binds=binds)
            env.update(HOME="/tmp", TMPDIR="/tmp")
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, env=env, cwd=cwd, stdin=asyncio.subprocess.PIPE,
                start_new_session=True)
        except OSError as exc:
            log.warning("cannot start an executor for tenant %r: %s", tenant, exc)
            return None
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{self.config.address} {self.worker_id} {proc.pid}\n".encode())
            proc.stdin.close()
        except (OSError, RuntimeError):
            _kill(proc.pid)
            return None
        return proc

    async def _supervise(self, session: int, tenant: str = "") -> None:
        if self._stopping or session != self._session_no or not self.worker_id:
            return
        proc = await (self._tenant_executor(tenant) if tenant else self._executor())
        if proc is None:
            return
        self.children[proc.pid] = proc
        started = asyncio.get_running_loop().time()
        code = await proc.wait()
        del self.children[proc.pid]
        asked = proc.pid in self._killed
        retired = proc.pid in self._retired
        self._killed.discard(proc.pid)
        self._retired.discard(proc.pid)
        if self._stopping or session != self._session_no or retired:
            return
        if tenant:  # not replaced: the scheduler asks for one when the tenant needs it
            if code != 0 and not asked:
                log.warning("executor %d of tenant %r exited with %s", proc.pid, tenant,
                            _describe_exit(code))
            return
        if code != 0:
            log.log(logging.INFO if asked else logging.WARNING,
                    "executor %d exited with %s; starting a new one", proc.pid,
                    _describe_exit(code))
        if asyncio.get_running_loop().time() - started < 1.0:
            await asyncio.sleep(1.0)  # do not spin on an executor that dies at start
        self._spawn()

    async def _heartbeat(self, proto: FramedProtocol) -> None:
        """Heartbeats (and the store's use, for `qsrv status`) on this session's registered
        connection only; they end with it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            if proto.closed or self.proto is not proto:
                return
            proto.send(Heartbeat(loop.time()))
            stats = self.store.stats()
            if stats != self._store_stats:
                self._store_stats = stats
                proto.send(WorkerInfo({"store_stats": stats}))


def _confinement() -> _confine.Confinement:
    confinement = _confine.Confinement()
    confinement.available()  # probed here, off the event loop
    return confinement


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the executor and anything its task started
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover
        os.kill(pid, signal.SIGKILL)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
