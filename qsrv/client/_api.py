"""The driver's API: init, shutdown, put, get, wait, cancel, status, runtime_context.

Every call reaches the cluster through `connected()`: the installed `Runtime`, or, the first
time, what `init()` with no arguments does (join ``QSRV_ADDRESS``, else the cluster of
``qsrv start``, else start an embedded local cluster). `get` and `wait` return their value in
plain code and an awaitable in a thread that runs an event loop (asyncio or trio).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

from qsrv import _bridge
from qsrv._local_cluster import RunningCluster, find_running
from qsrv._retry import Backoff, poll_until
from qsrv.client import _runtime, _wait
from qsrv.client._driver import Driver
from qsrv.client._local import LocalCluster
from qsrv.client._ref import ObjectRef
from qsrv.client._runtime import Runtime, RuntimeContext
from qsrv.errors import (
    ConfigError,
    ConnectionLostError,
    NotConnectedError,
)

_lock = threading.RLock()
log = logging.getLogger("qsrv")


# ---- connecting ----------------------------------------------------------------------------
def init(address: str | None = None, token: str | None = None, *,
         num_cpus: float | None = None, num_gpus: int | None = None,
         memory: int | str | None = None, resources: dict[str, float] | None = None,
         gateway: bool = False, data_dir: str | None = None,
         connect_timeout: float = 60.0, dashboard: bool = False,
         log_to_driver: bool = False) -> dict[str, Any]:
    """Connect this process to a cluster; returns ``{"address": ..., "local": bool}``.

    With no address (and no ``QSRV_ADDRESS``) it joins the cluster ``qsrv start`` keeps for
    this OS user when one runs (and says so in its first log line; the result then has
    ``"shared": True`` and `shutdown()` only disconnects). Otherwise, or when sizes or a
    gateway are given, an embedded local cluster is started: a scheduler
    and one worker agent with this machine's cores, memory and GPUs (or ``num_cpus``,
    ``num_gpus``, ``memory``, ``resources``), stopped by `shutdown()` or at exit. With
    ``gateway=True`` it also starts the programs-and-jobs gateway (state under ``data_dir``,
    default ``~/.qsrv``) and sets ``QSRV_GATEWAY``/``QSRV_GATEWAY_TOKEN`` so that
    ``qsrv.Client()`` reaches it; the result then has ``gateway`` and ``gateway_token``.
    With ``dashboard=True`` a dashboard of the cluster runs in this process: its URL (with a
    one-time login token) is printed and is the result's ``dashboard``. With
    ``log_to_driver=True`` what this process's tasks print (stdout, stderr) is printed here
    too, each line prefixed with the worker, executor pid and task.
    """
    with _lock:
        current = _runtime.active
        if current is not None and current.in_executor:
            return {"address": "", "local": False}  # inside a task: already connected
        if current is not None:
            raise ConfigError("qsrv is already initialised; call qsrv.shutdown() first")
        address = address or os.environ.get("QSRV_ADDRESS") or None
        token = token if token is not None else os.environ.get("QSRV_TOKEN", "")
        cluster: LocalCluster | None = None
        shared: RunningCluster | None = None
        sized = any(v is not None for v in (num_cpus, num_gpus, memory, resources, data_dir))
        if address is None:
            if token:
                raise ConfigError("a token was given without an address to join")
            # `qsrv start`'s cluster when it runs, unless this call describes a cluster of its own
            shared = None if sized or gateway else find_running()
            if shared is not None:
                address, token = shared.address, shared.token
                log.warning("qsrv.init() joined the local cluster of `qsrv start` (%s); "
                            "qsrv.shutdown() only disconnects, `qsrv stop` stops it",
                            _describe(shared))
            else:
                cluster = LocalCluster(num_cpus=num_cpus, num_gpus=num_gpus, memory=memory,
                                       resources=resources, gateway=gateway, data_dir=data_dir,
                                       log_to_driver=log_to_driver)
                address, token = cluster.address, cluster.token
        elif sized or gateway:
            raise ConfigError("num_cpus/num_gpus/memory/resources/gateway describe a local "
                              "cluster; they cannot be given with an address to join")
        driver: Driver | None = None
        try:
            driver = Driver(address, token, connect_timeout=connect_timeout)
            runtime = Runtime(driver.core, driver=driver, cluster=cluster)
            _runtime.install(runtime)
            if log_to_driver:
                driver.follow_output()
            if cluster is not None:
                _wait_for_worker(runtime, connect_timeout)
        except BaseException:
            _runtime.uninstall()
            _close(driver, cluster)
            raise
        info: dict[str, Any] = {"address": address, "local": cluster is not None}
        if shared is not None:
            info["shared"] = True
        if cluster is not None and cluster.gateway_url:
            info.update(gateway=cluster.gateway_url, gateway_token=cluster.gateway_token)
            os.environ["QSRV_GATEWAY"] = cluster.gateway_url
            os.environ["QSRV_GATEWAY_TOKEN"] = cluster.gateway_token
        if dashboard:
            info["dashboard"] = _start_dashboard(address, token)
        return info


_dashboard: Any = None  # the DashboardServer init(dashboard=True) started


def _start_dashboard(address: str, token: str) -> str:
    """A dashboard of this cluster on 127.0.0.1:7423 (another free port if that one is
    taken), in a thread of this process; prints and returns its login URL."""
    global _dashboard
    from qsrv.dashboard import DEFAULT_PORT, DashboardServer

    for port in (DEFAULT_PORT, 0):
        server = DashboardServer(address, token, port=port)
        try:
            url = server.start_in_thread()
        except OSError:
            continue
        _dashboard = server
        print(f"qsrv dashboard: {url}", flush=True)
        return url
    raise ConfigError("could not start the dashboard")


def _stop_dashboard() -> None:
    global _dashboard
    server, _dashboard = _dashboard, None
    if server is not None:
        server.stop_thread()


def timeline(since: float | str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """The recent task events of this cluster as a Chrome trace document
    (``{"traceEvents": [...]}``: one complete event per task run, on its worker (pid) and
    executor (tid)); ``since``: only the last seconds (``60`` or ``"60s"``)."""
    from qsrv.dashboard import parse_since
    from qsrv.dashboard import timeline as fetch

    driver = connected().driver
    if driver is None:
        raise NotConnectedError("qsrv.timeline() is for drivers: inside a task there is none")
    try:
        seconds = parse_since(since)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    trace: dict[str, Any] = fetch(driver.address, driver.token, seconds, timeout=timeout)
    return trace


def local_gateway(data_dir: str | None = None) -> dict[str, str]:
    """The gateway of this process's local cluster, as ``{"gateway": URL, "gateway_token":
    TOKEN}`` (also set as ``QSRV_GATEWAY``/``QSRV_GATEWAY_TOKEN``), in either order: before
    any other call it does ``init(gateway=True)``; once the local cluster runs (tasks,
    ``init()``) it starts the gateway for it. ConfigError in a process that joined a cluster."""
    with _lock:
        current = _runtime.active
        if current is None:
            info = init(gateway=True, data_dir=data_dir)
            return {"gateway": info["gateway"], "gateway_token": info["gateway_token"]}
        cluster = current.cluster
        if cluster is None:
            raise ConfigError(
                "this process joined a running cluster, so it has no local gateway; programs "
                "run on that cluster's gateway (qsrv gateway --cluster ...), reached with "
                "qsrv.Client(URL, TOKEN)")
        cluster.ensure_gateway(data_dir)
        os.environ["QSRV_GATEWAY"] = cluster.gateway_url
        os.environ["QSRV_GATEWAY_TOKEN"] = cluster.gateway_token
        return {"gateway": cluster.gateway_url, "gateway_token": cluster.gateway_token}


def _describe(shared: RunningCluster) -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in shared.options.items() if v is not None)
    return f"{shared.address}{', ' + sizes if sizes else ''}"


def _wait_for_worker(runtime: Runtime, timeout: float) -> None:
    driver, cluster = runtime.driver, runtime.cluster
    assert driver is not None and cluster is not None

    def worker_ready() -> bool:
        cluster.check_alive()
        workers = driver.status()["workers"]
        return bool(workers and workers[0]["executors"] > 0)

    if not poll_until(worker_ready, timeout, interval=0.02):
        raise NotConnectedError(f"the local worker did not start within {timeout:g} s")


def shutdown() -> None:
    """Disconnect, and stop the local cluster if this process started one."""
    with _lock:
        current = _runtime.active
        if current is None or current.in_executor:
            return
        _runtime.uninstall()
        _stop_dashboard()
        _close(current.driver, current.cluster)


def _close(driver: Driver | None, cluster: LocalCluster | None) -> None:
    if driver is not None:
        driver.close()
    if cluster is not None:
        if cluster.gateway_url and os.environ.get("QSRV_GATEWAY") == cluster.gateway_url:
            os.environ.pop("QSRV_GATEWAY", None)  # set by init(gateway=True): gone with it
            os.environ.pop("QSRV_GATEWAY_TOKEN", None)
        cluster.stop()


atexit.register(shutdown)


def is_initialized() -> bool:
    return _runtime.active is not None


def connected() -> Runtime:
    """This process's runtime. Before `init()`, the first call does what `init()` with no
    arguments does: join ``QSRV_ADDRESS``, else start an embedded local cluster. A driver that
    lost its scheduler (one it joined, not one it started) reconnects here."""
    runtime = _runtime.active
    if runtime is None:
        init()
        runtime = _runtime.active
        if runtime is None:  # pragma: no cover - init() installs one or raises
            raise NotConnectedError("qsrv.init() did not connect")
    elif runtime.core.closed is not None and runtime.driver is not None \
            and runtime.cluster is None:
        runtime = _reconnect(runtime)
    return runtime


def _reconnect(lost: Runtime, timeout: float = 30.0) -> Runtime:
    """The scheduler went away: join it again (with back-off) for new work. Refs from before
    stay what they were: their values are gone (ObjectLostError on get)."""
    with _lock:
        current = _runtime.active
        if current is not lost and current is not None:
            return current  # another thread reconnected meanwhile
        old = lost.driver
        assert old is not None
        old.close()
        backoff = Backoff(0.1, cap=2.0, jitter=True, timeout=timeout)
        while True:
            try:
                driver = Driver(old.address, old.token)
            except ConnectionLostError:
                if not backoff.sleep():
                    raise ConnectionLostError(
                        f"lost the scheduler at {old.address} and could not reconnect within "
                        f"{timeout:g} s") from None
                continue
            if getattr(old, "following_output", False):  # log_to_driver goes on
                driver.follow_output()
            runtime = Runtime(driver.core, driver=driver)
            _runtime.install(runtime)
            return runtime


def cluster_status(timeout: float = 10.0) -> dict[str, Any]:
    """Workers (total/free resources, executors), task counts and the scheduler's event-loop
    lag, as `qsrv status` shows. Like every call, the first one connects (or starts the local
    cluster). GetTimeoutError when no answer comes within ``timeout`` seconds (what this
    driver submitted before is handled first)."""
    if isinstance(timeout, bool) or not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    driver = connected().driver  # reconnects if the scheduler was lost
    if driver is None:
        raise NotConnectedError("qsrv.status() is for drivers: inside a task there is none")
    return driver.status(timeout)


# ---- values --------------------------------------------------------------------------------
def put(value: Any) -> ObjectRef:
    """Store a value in the cluster; the ref can be passed to tasks and to `get`."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef: pass the ref itself instead")
    return ObjectRef(connected().core.put(value))


def _ids(refs: object, what: str) -> list[int]:
    if isinstance(refs, ObjectRef):
        return [refs._id]
    try:
        items = list(refs)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{what}() takes an ObjectRef or a list of them, "
                        f"got {type(refs).__name__}") from None
    bad = [r for r in items if not isinstance(r, ObjectRef)]
    if bad:
        raise TypeError(f"{what}() takes ObjectRefs, got {type(bad[0]).__name__}")
    return [r._id for r in items]


def get(refs: ObjectRef | Iterable[ObjectRef], *, timeout: float | None = None,
        progress: bool | None = None) -> Any:
    """The value of a ref, or the list of values of a list of refs.

    Blocks in plain code; in a thread running an event loop (asyncio or trio) it returns an
    awaitable instead (``await qsrv.get(refs)``). Raises the task's own exception (also a
    TaskError), GetTimeoutError when `timeout` seconds pass first.

    ``progress=True`` shows a progress bar (finished / failed / total, rate, time left; a
    widget in Jupyter); by default one appears for 100 refs or more still waited on after
    2 s in an interactive terminal or a notebook (``QSRV_PROGRESS=0``: never).
    """
    if _bridge.in_async_context():
        return get_async(refs, timeout=timeout, progress=progress)
    return get_blocking(refs, timeout=timeout, progress=progress)


def get_blocking(refs: ObjectRef | Iterable[ObjectRef], *, timeout: float | None = None,
                 progress: bool | None = None) -> Any:
    """`get` that blocks, even in a thread that runs an event loop."""
    ids = _ids(refs, "get")
    values = _wait.get(connected().core, ids, timeout, progress)
    return values[0] if isinstance(refs, ObjectRef) else values


async def get_async(refs: ObjectRef | Iterable[ObjectRef], *, timeout: float | None = None,
                    progress: bool | None = None) -> Any:
    """`get` for async code (asyncio or trio). Cancelling the awaiting task stops the wait,
    not the tasks."""
    ids = _ids(refs, "get")
    values = await _wait.get_async(connected().core, ids, timeout, progress)
    return values[0] if isinstance(refs, ObjectRef) else values


def _wait_args(refs: Sequence[ObjectRef], num_returns: int) -> tuple[list[ObjectRef], list[int]]:
    if isinstance(refs, ObjectRef):
        raise TypeError("wait() takes a list of ObjectRefs")
    items = list(refs)
    ids = _ids(items, "wait")
    if isinstance(num_returns, bool) or not 0 <= num_returns <= len(set(ids)):
        raise ConfigError(f"num_returns must be between 0 and {len(set(ids))}, "
                          f"got {num_returns!r}")
    return items, ids


def _split(items: list[ObjectRef], ready_ids: set[int], num_returns: int
           ) -> tuple[list[ObjectRef], list[ObjectRef]]:
    ready: list[ObjectRef] = []
    pending: list[ObjectRef] = []
    for ref in items:
        (ready if ref._id in ready_ids and len(ready) < num_returns else pending).append(ref)
    return ready, pending


def wait(refs: Sequence[ObjectRef], *, num_returns: int = 1, timeout: float | None = None
         ) -> tuple[list[ObjectRef], list[ObjectRef]] | Awaitable[
             tuple[list[ObjectRef], list[ObjectRef]]]:
    """``(ready, pending)``: the first `num_returns` refs whose values exist, and the rest, in
    the order given. Returns early with fewer ready ones when `timeout` passes. In a thread
    running an event loop it returns an awaitable (`wait_async`)."""
    if _bridge.in_async_context():
        items, ids = _wait_args(refs, num_returns)
        return _wait_async(items, ids, num_returns, timeout)
    return wait_blocking(refs, num_returns=num_returns, timeout=timeout)


def wait_blocking(refs: Sequence[ObjectRef], *, num_returns: int = 1,
                  timeout: float | None = None) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """`wait` that blocks, even in a thread that runs an event loop."""
    items, ids = _wait_args(refs, num_returns)
    return _split(items, _wait.wait_ids(connected().core, ids, num_returns, timeout),
                  num_returns)


async def wait_async(refs: Sequence[ObjectRef], *, num_returns: int = 1,
                     timeout: float | None = None
                     ) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """`wait` for async code (asyncio or trio)."""
    items, ids = _wait_args(refs, num_returns)
    return await _wait_async(items, ids, num_returns, timeout)


async def _wait_async(items: list[ObjectRef], ids: list[int], num_returns: int,
                      timeout: float | None) -> tuple[list[ObjectRef], list[ObjectRef]]:
    ready = await _wait.wait_ids_async(connected().core, ids, num_returns, timeout)
    return _split(items, ready, num_returns)


def cancel(ref: ObjectRef) -> None:
    """Cancel the task behind a ref: dropped if queued, its executor killed if running.
    `get` on it then raises TaskCancelledError. No effect on a finished task or a put value."""
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, got {type(ref).__name__}")
    connected().core.cancel(ref._id)


def runtime_context() -> RuntimeContext:
    """Inside a task: its task id, worker id, node, pid, GPU ids and resources."""
    runtime = _runtime.active
    if runtime is None or runtime.task_context is None:
        raise RuntimeError("runtime_context() is only available inside a task")
    return runtime.task_context()
