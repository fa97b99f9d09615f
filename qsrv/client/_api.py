"""The task API: init, distribute_task, put, get, wait, cancel, shutdown."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar, overload

import cloudpickle

from qsrv import _resources
from qsrv.client import _context
from qsrv.client._core import ClientCore, TaskOptions, function_id
from qsrv.client._ref import ObjectRef
from qsrv.errors import ConfigError, ConnectionClosedError, GetTimeoutError, NotConnectedError

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.RLock()
_driver: Any = None  # the Driver of this process, when it is a driver
_cluster: Any = None  # the LocalCluster this process started, if any


# ---- connecting ----------------------------------------------------------------------------
def init(address: str | None = None, token: str | None = None, *,
         num_cpus: float | None = None, num_gpus: int | None = None,
         memory: int | str | None = None, resources: dict[str, float] | None = None,
         gateway: bool = False, data_dir: str | None = None,
         connect_timeout: float = 60.0) -> dict[str, Any]:
    """Connect this process to a cluster; returns ``{"address": ..., "local": bool}``.

    With no address (and no ``QSRV_ADDRESS``) an embedded local cluster is started: a scheduler
    and one worker agent with this machine's cores, memory and GPUs (or ``num_cpus``,
    ``num_gpus``, ``memory``, ``resources``), stopped by `shutdown()` or at exit. With
    ``gateway=True`` it also starts the programs-and-jobs gateway (state under ``data_dir``,
    default ``~/.qsrv``) and sets ``QSRV_GATEWAY``/``QSRV_GATEWAY_TOKEN`` so that
    ``qsrv.Client()`` reaches it; the result then has ``gateway`` and ``gateway_token``.
    """
    global _driver, _cluster
    from qsrv.client._driver import Driver
    from qsrv.client._local import LocalCluster

    with _lock:
        if _context.executor is not None:
            return {"address": "", "local": False}  # inside a task: already connected
        if _driver is not None:
            raise ConfigError("qsrv is already initialised; call qsrv.shutdown() first")
        address = address or os.environ.get("QSRV_ADDRESS") or None
        token = token if token is not None else os.environ.get("QSRV_TOKEN", "")
        local = address is None
        if local:
            if token:
                raise ConfigError("a token was given without an address to join")
            _cluster = LocalCluster(num_cpus=num_cpus, num_gpus=num_gpus, memory=memory,
                                    resources=resources, gateway=gateway, data_dir=data_dir)
            address, token = _cluster.address, _cluster.token
        elif any(v is not None for v in (num_cpus, num_gpus, memory, resources, data_dir)) \
                or gateway:
            raise ConfigError("num_cpus/num_gpus/memory/resources/gateway describe a local "
                              "cluster; they cannot be given with an address to join")
        assert address is not None
        try:
            _driver = Driver(address, token, connect_timeout=connect_timeout)
            _context.core = _driver.core
            if local:
                _wait_for_worker(connect_timeout)
        except BaseException:
            _teardown()
            raise
        info: dict[str, Any] = {"address": address, "local": local}
        if local and _cluster.gateway_url:
            info.update(gateway=_cluster.gateway_url, gateway_token=_cluster.gateway_token)
            os.environ["QSRV_GATEWAY"] = _cluster.gateway_url
            os.environ["QSRV_GATEWAY_TOKEN"] = _cluster.gateway_token
        return info


def _wait_for_worker(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _cluster.check_alive()
        workers = _driver.status()["workers"]
        if workers and workers[0]["executors"] > 0:
            return
        time.sleep(0.02)
    raise NotConnectedError(f"the local worker did not start within {timeout:g} s")


def shutdown() -> None:
    """Disconnect, and stop the local cluster if this process started one."""
    with _lock:
        _teardown()


def _teardown() -> None:
    global _driver, _cluster
    if _driver is not None:
        _context.core = None
        _driver.close()
        _driver = None
    if _cluster is not None:
        _cluster.stop()
        _cluster = None


atexit.register(shutdown)


def is_initialized() -> bool:
    return _context.core is not None


def _core() -> ClientCore:
    core = _context.core
    if core is None:
        init()  # first use: join QSRV_ADDRESS or start a local cluster, as `init()` would
        core = _context.core
        if core is None:  # pragma: no cover
            raise NotConnectedError("qsrv.init() did not connect")
    elif core.closed is not None and _driver is not None and _cluster is None:
        core = _reconnect()
    return core


def _reconnect(timeout: float = 30.0) -> ClientCore:
    """The scheduler went away: join it again (with back-off) for new work. Refs from before
    stay what they were: their values are gone (ObjectLostError on get)."""
    global _driver
    from qsrv.client._driver import Driver

    with _lock:
        if _context.core is not None and _context.core.closed is None:
            return _context.core  # another thread reconnected meanwhile
        old = _driver
        old.close()
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            try:
                _driver = Driver(old.address, old.token)
            except ConnectionClosedError:
                if time.monotonic() + delay > deadline:
                    raise ConnectionClosedError(
                        f"lost the scheduler at {old.address} and could not reconnect within "
                        f"{timeout:g} s") from None
                time.sleep(delay)
                delay = min(2 * delay, 2.0)
                continue
            core: ClientCore = _driver.core
            _context.core = core
            return core


def cluster_status() -> dict[str, Any]:
    """Workers (total/free resources, executors) and task counts, as `qsrv status` shows."""
    if _driver is None:
        raise NotConnectedError("qsrv.status() needs a driver connection: call qsrv.init()")
    _core()  # reconnects if the scheduler was lost
    status: dict[str, Any] = _driver.status()
    return status


# ---- tasks ---------------------------------------------------------------------------------
_OPTION_NAMES = frozenset({"target", "max_retries", "timeout", "retry_exceptions", "name"})


def _task_options(fn: Callable[..., Any], options: dict[str, Any]) -> tuple[TaskOptions, Any]:
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise ConfigError(f"unknown task option(s) {sorted(unknown)}; "
                          f"known: {sorted(_OPTION_NAMES)}")
    resources = _resources.normalize_target(options.get("target"))
    max_retries = options.get("max_retries", 3)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be an int >= 0, got {max_retries!r}")
    timeout = options.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout <= 0):
        raise ConfigError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
    retry = options.get("retry_exceptions", False)
    retry_types: Any = None
    if isinstance(retry, bool):
        retry_flag = retry
    else:
        types = list(retry) if isinstance(retry, Iterable) else [retry]
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
            raise ConfigError("retry_exceptions must be a bool or a list of exception types")
        retry_flag, retry_types = bool(types), tuple(types)
    name = str(options.get("name") or getattr(fn, "__qualname__", repr(fn)))
    return TaskOptions(name, resources, max_retries, timeout, retry_flag), retry_types


def _ship_local_module_by_value(fn: Callable[..., Any]) -> None:
    """A function from a module under the working directory (a script's helper module, a job's
    sandbox) travels by value: workers elsewhere cannot import it. Installed packages travel
    by reference, as cloudpickle does by default."""
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is None or path is None or module.__name__ in ("__main__", "builtins"):
        return
    cwd = os.path.realpath(os.getcwd())
    if os.path.realpath(path).startswith(cwd + os.sep) and "site-packages" not in path:
        with contextlib.suppress(ValueError):  # already registered
            cloudpickle.register_pickle_by_value(module)


class RemoteFunction(Generic[P, R]):
    """A function that runs as a task: calling it returns an ObjectRef at once."""

    def __init__(self, fn: Callable[P, R], options: dict[str, Any],
                 pickled: tuple[bytes, bytes] | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"distribute_task needs a function, got {fn!r}")
        self._fn = fn
        self._options = options
        self._opts, self._retry_types = _task_options(fn, options)
        self._pickled = pickled
        functools.update_wrapper(self, fn)

    def _function(self) -> tuple[bytes, bytes]:
        if self._pickled is None:
            _ship_local_module_by_value(self._fn)
            payload = cloudpickle.dumps(self._fn, protocol=5)
            self._pickled = (function_id(payload), payload)
        return self._pickled

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef:
        core = _core()
        fn_id, payload = self._function()
        return core.submit(fn_id, lambda: payload, args, kwargs, self._opts, self._retry_types)

    def options(self, **overrides: Any) -> RemoteFunction[P, R]:
        """The same task with some options replaced for the calls made through the result."""
        return RemoteFunction(self._fn, {**self._options, **overrides}, self._pickled)

    def __repr__(self) -> str:
        return f"<qsrv task {self._opts.name} target={_resources.display(self._opts.resources)}>"


@overload
def distribute_task(fn: Callable[P, R], /) -> RemoteFunction[P, R]: ...
@overload
def distribute_task(
    fn: None = None, /, *, target: dict[str, Any] | None = None, max_retries: int = 3,
    timeout: float | None = None, retry_exceptions: bool | Sequence[type[BaseException]] = False,
    name: str | None = None,
) -> Callable[[Callable[P, R]], RemoteFunction[P, R]]: ...
def distribute_task(fn: Any = None, /, **options: Any) -> Any:
    """Turn a function (plain or ``async def``) into a task.

    ``target`` maps resource names to amounts (``cpu``, ``gpu``, ``memory``/``mem``, any custom
    tag; default one CPU); ``max_retries`` counts retries after its executor or worker died;
    ``timeout`` (seconds from submission) fails the task if it has not finished by then;
    ``retry_exceptions`` also retries on the task's own errors (True or a list of types).
    Options are checked here, so a malformed target fails at decoration time.
    """
    if fn is not None:
        return RemoteFunction(fn, options)
    return lambda f: RemoteFunction(f, options)


# ---- values --------------------------------------------------------------------------------
def put(value: Any) -> ObjectRef:
    """Store a value in the cluster; the ref can be passed to tasks and to `get`."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef: pass the ref itself instead")
    return _core().put(value)


def _ids(refs: Any, what: str) -> list[int]:
    if isinstance(refs, ObjectRef):
        return [refs._id]
    try:
        items = list(refs)
    except TypeError:
        raise TypeError(f"{what}() takes an ObjectRef or a list of them, "
                        f"got {type(refs).__name__}") from None
    bad = [r for r in items if not isinstance(r, ObjectRef)]
    if bad:
        raise TypeError(f"{what}() takes ObjectRefs, got {type(bad[0]).__name__}")
    return [r._id for r in items]


def _wait_ids(core: ClientCore, ids: list[int], num: int, timeout: float | None) -> set[int]:
    ready: set[int] = set()
    done = threading.Event()
    guard = threading.Lock()

    def on_ready(oid: int) -> None:
        with guard:
            ready.add(oid)
            if len(ready) >= num:
                done.set()

    unique = list(dict.fromkeys(ids))
    for oid in core.watch(unique, on_ready):
        on_ready(oid)
    if num <= 0:
        done.set()
    try:
        if not done.is_set():
            core.block(done, timeout)
    finally:
        core.unwatch(unique, on_ready)
    with guard:
        return set(ready)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def get(refs: Any, *, timeout: float | None = None) -> Any:
    """The value of a ref, or the list of values of a list of refs.

    Blocks in plain code; inside a running event loop it returns an awaitable instead
    (``await qsrv.get(refs)``). Raises the task's own exception (also a TaskError),
    GetTimeoutError when `timeout` seconds pass first.
    """
    if _in_event_loop():
        return get_async(refs, timeout=timeout)
    return _get_sync(refs, timeout)


def _get_sync(refs: Any, timeout: float | None) -> Any:
    ids = _ids(refs, "get")
    core = _core()
    unique = len(set(ids))
    ready = _wait_ids(core, ids, unique, timeout)
    if len(ready) < unique and core.closed is None:
        raise GetTimeoutError(f"get() timed out after {timeout:g} s with "
                              f"{unique - len(ready)} of {unique} values not ready")
    values = [core.value(oid) for oid in ids]
    return values[0] if isinstance(refs, ObjectRef) else values


async def get_async(refs: Any, *, timeout: float | None = None) -> Any:
    """`get` for async code."""
    ids = _ids(refs, "get")
    core = _core()
    if _context.executor is not None:  # inside an executor the socket is pumped by a thread
        return await asyncio.to_thread(_get_sync, refs, timeout)
    loop = asyncio.get_running_loop()
    unique = list(dict.fromkeys(ids))
    remaining = set(unique)
    finished: asyncio.Future[None] = loop.create_future()

    def arrived(oid: int) -> None:
        remaining.discard(oid)
        if not remaining and not finished.done():
            finished.set_result(None)

    def on_ready(oid: int) -> None:  # called on the IO thread
        loop.call_soon_threadsafe(arrived, oid)

    for oid in core.watch(unique, on_ready):
        arrived(oid)
    if not remaining and not finished.done():
        finished.set_result(None)
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout)
    except TimeoutError:
        raise GetTimeoutError(f"get() timed out after {timeout:g} s with {len(remaining)} of "
                              f"{len(unique)} values not ready") from None
    finally:
        core.unwatch(unique, on_ready)
    values = [core.value(oid) for oid in ids]
    return values[0] if isinstance(refs, ObjectRef) else values


def wait(refs: Sequence[ObjectRef], *, num_returns: int = 1, timeout: float | None = None
         ) -> tuple[list[ObjectRef], list[ObjectRef]] | Awaitable[
             tuple[list[ObjectRef], list[ObjectRef]]]:
    """``(ready, pending)``: the first `num_returns` refs whose values exist, and the rest, in
    the order given. Returns early with fewer ready ones when `timeout` passes. Inside a running
    event loop it returns an awaitable."""
    if isinstance(refs, ObjectRef):
        raise TypeError("wait() takes a list of ObjectRefs")
    items = list(refs)
    ids = _ids(items, "wait")
    if isinstance(num_returns, bool) or not 0 <= num_returns <= len(set(ids)):
        raise ConfigError(f"num_returns must be between 0 and {len(set(ids))}, "
                          f"got {num_returns!r}")
    if _in_event_loop():
        return asyncio.to_thread(_wait_sync, items, ids, num_returns, timeout)
    return _wait_sync(items, ids, num_returns, timeout)


def _wait_sync(items: list[ObjectRef], ids: list[int], num_returns: int,
               timeout: float | None) -> tuple[list[ObjectRef], list[ObjectRef]]:
    ready_ids = _wait_ids(_core(), ids, num_returns, timeout)
    ready: list[ObjectRef] = []
    pending: list[ObjectRef] = []
    for ref in items:
        (ready if ref._id in ready_ids and len(ready) < num_returns else pending).append(ref)
    return ready, pending


def cancel(ref: ObjectRef) -> None:
    """Cancel the task behind a ref: dropped if queued, its executor killed if running.
    `get` on it then raises TaskCancelledError. No effect on a finished task or a put value."""
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, got {type(ref).__name__}")
    _core().cancel(ref._id)


def runtime_context() -> Any:
    """Inside a task: its task id, worker id, node, pid, GPU ids and resources."""
    if _context.executor is None:
        raise RuntimeError("runtime_context() is only available inside a task")
    return _context.executor.context()
