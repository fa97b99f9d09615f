"""The worker agent: registers the node's resources and supervises executor subprocesses.

It is not on the per-task path: executors talk to the scheduler directly. The agent starts
them, replaces any that die (a crashing task kills its executor, never the agent), kills them
when told (cancel, timeout), and sends heartbeats. It exits when the scheduler goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from qsrv._resources import SCALE, normalize, parse_memory
from qsrv._retry import Backoff
from qsrv.errors import ConfigError, ConnectionLostError
from qsrv.protocol import (
    Connection,
    FreeObjects,
    Heartbeat,
    HoldObjects,
    KillExecutor,
    ObjectsCopied,
    RegisterWorker,
    SpawnExecutor,
    WorkerAccepted,
    WorkerInfo,
)
from qsrv.store import ObjectStore, StoreService, sweep_stale
from qsrv.transport import FramedProtocol, client_context, parse_address, unix_path
from qsrv.worker import _detect

log = logging.getLogger("qsrv.worker")
STORE_FRACTION = 0.3  # of the node's memory, for its object store unless told otherwise


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
    executors: int | None = None  # executors started up front; default: one per whole CPU
    reconnect_timeout: float = 60.0  # keep trying to reach a lost scheduler this long; 0: exit
    object_store_memory: int | str | None = None  # default: STORE_FRACTION of the memory
    spill_dir: str | None = None  # default: a directory under the system's temp dir
    store_host: str = "127.0.0.1"  # where other nodes pull this node's objects from

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
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.totals, self.gpu_ids = config.capacity()
        self.worker_id = 0
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.proto: FramedProtocol | None = None
        self._closed = asyncio.Event()
        self._stopping = False  # this session is ending: do not replace executors
        self._exiting = False  # the agent is ending: do not reconnect
        self._tasks: set[asyncio.Task[Any]] = set()
        for path in sweep_stale():
            log.warning("removed the object store arena %s of an agent that died", path)
        self._spill = tempfile.TemporaryDirectory(prefix="qsrv-spill-", dir=config.spill_dir)
        # The arena grows as it is used (pages reserved once, kept warm), up to its capacity.
        self.store = StoreService(
            ObjectStore(config.store_capacity(), self._spill.name, grow=True), config.token,
            host=config.store_host, on_copied=self._copied)
        self._store_stats: dict[str, int] = {}
        self._sessions = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Join the cluster and supervise executors. When the scheduler goes away, stop the
        executors and reconnect with back-off for up to `reconnect_timeout` seconds."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._exit_requested)
        try:
            await self._run(loop)
        finally:
            self.store.close()
            self._spill.cleanup()

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        # The first connection gets the same `reconnect_timeout` as every later one.
        backoff = Backoff(0.1, cap=5.0, timeout=self.config.reconnect_timeout, clock=loop.time)
        while not self._exiting:
            try:
                await self._session()
            except ConnectionLostError as exc:
                delay = backoff.next_delay()
                if delay is None:
                    raise
                log.warning("%s; retrying in %.1f s", exc, delay)
            else:
                if self._exiting or self.config.reconnect_timeout <= 0:
                    return
                backoff.reset()
                delay = backoff.next_delay() or 0.0
                log.warning("lost the scheduler; reconnecting for up to %g s",
                            self.config.reconnect_timeout)
            await asyncio.sleep(delay)

    def _exit_requested(self) -> None:
        self._exiting = True
        self._closed.set()

    async def _session(self) -> None:
        """One connection to the scheduler, until it closes; executors end with it."""
        loop = asyncio.get_running_loop()
        conn = Connection(server=False, token=self.config.token, role="worker")

        def factory() -> FramedProtocol:
            return FramedProtocol(conn, on_messages=self._on_messages, on_close=self._on_close,
                                  on_open=self._on_open)

        path = unix_path(self.config.address)
        try:
            if path:
                _, proto = await loop.create_unix_connection(factory, path)
            else:
                host, port = parse_address(self.config.address)
                tls = client_context()
                _, proto = await loop.create_connection(
                    factory, host, port, ssl=tls, server_hostname=host if tls else None)
        except OSError as exc:
            raise ConnectionLostError(
                f"cannot reach the scheduler at {self.config.address}: {exc}") from exc
        self.proto = proto
        self._loop = loop
        self._sessions += 1
        if self._sessions > 1:  # a new scheduler: the old one's directory is gone
            self.store.forget_directory()
        self._closed.clear()
        self._stopping = False
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            await self._closed.wait()
        finally:
            heartbeat.cancel()
            await self.stop()

    async def stop(self) -> None:
        self._stopping = True
        for proc in list(self.children.values()):
            _kill(proc.pid)
        for proc in list(self.children.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
        if self.proto is not None:
            self.proto.close("")
        self._closed.set()

    # ---- scheduler messages ------------------------------------------------------------------
    def _on_open(self, proto: FramedProtocol) -> None:
        name = self.config.name or f"{socket.gethostname()}:{os.getpid()}"
        proto.send(RegisterWorker(name, self.totals, self.gpu_ids, os.getpid(),
                                  {"host": socket.gethostname(), "python": sys.version.split()[0],
                                   "store": self.store.info()}))

    def _on_messages(self, proto: FramedProtocol, messages: list[Any]) -> None:
        for msg in messages:
            if isinstance(msg, HoldObjects):
                self.store.hold(msg.ids)
            elif isinstance(msg, FreeObjects):
                self.store.free(msg.ids)
            elif isinstance(msg, WorkerAccepted):
                self.worker_id = self.store.worker_id = msg.worker_id
                count = self.config.executors
                if count is None:
                    count = max(1, self.totals.get("cpu", 0) // SCALE)
                for _ in range(count):
                    self._spawn()
                log.info("registered as worker %d; %d executors", msg.worker_id, count)
                self._probe(proto)
            elif isinstance(msg, SpawnExecutor):
                for _ in range(msg.count):
                    self._spawn()
            elif isinstance(msg, KillExecutor) and msg.pid in self.children:
                log.info("killing executor %d: %s", msg.pid, msg.reason)
                _kill(msg.pid)

    def _probe(self, proto: FramedProtocol) -> None:
        """Learn what this node can simulate (slow: imports the simulator) off the event loop,
        then tell the scheduler; registration does not wait for it."""
        memory = self.totals.get("memory", 0)

        def probe() -> dict[str, Any]:
            try:
                quantum = importlib.import_module("qsrv.quantum")
                probe_capabilities = quantum.probe_capabilities
            except (ImportError, AttributeError):  # no quantum layer (or no simulator) here
                return {}
            return {"quantum": probe_capabilities(memory, list(self.gpu_ids))}

        async def run() -> None:
            info = await asyncio.get_running_loop().run_in_executor(None, probe)
            if info and not proto.closed:
                proto.send(WorkerInfo(info))

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _copied(self, oid: int) -> None:
        """A store thread pulled a copy: tell the scheduler's directory (from the loop)."""
        def send() -> None:
            if self.proto is not None and not self.proto.closed:
                self.proto.send(ObjectsCopied([oid]))

        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the agent is ending
                self._loop.call_soon_threadsafe(send)

    def _on_close(self, proto: FramedProtocol, reason: str) -> None:
        if not self._stopping:
            log.warning("scheduler connection closed (%s); stopping", reason)
        self._closed.set()

    # ---- executors ---------------------------------------------------------------------------
    def _spawn(self) -> None:
        task = asyncio.ensure_future(self._supervise())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self) -> None:
        if self._stopping:
            return
        env = dict(os.environ, QSRV_TOKEN=self.config.token, QSRV_WORKER_ID=str(self.worker_id),
                   QSRV_STORE_SOCKET=self.store.socket_path)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "qsrv.worker._executor", self.config.address,
            str(self.worker_id), env=env, start_new_session=True)
        self.children[proc.pid] = proc
        started = asyncio.get_running_loop().time()
        code = await proc.wait()
        del self.children[proc.pid]
        if self._stopping:
            return
        if code != 0:
            log.warning("executor %d exited with %s; starting a new one", proc.pid,
                        _describe_exit(code))
        if asyncio.get_running_loop().time() - started < 1.0:
            await asyncio.sleep(1.0)  # do not spin on an executor that dies at start
        self._spawn()

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            if self.proto is not None and self.worker_id:
                self.proto.send(Heartbeat(loop.time()))
                stats = self.store.stats()
                if stats != self._store_stats:  # `qsrv status` shows the store's use
                    self._store_stats = stats
                    self.proto.send(WorkerInfo({"store_stats": stats}))


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
