"""The client side: the task API, the driver connection, the local embedded cluster, and the
runtime that executors install (they are clients of the scheduler too)."""

from qsrv.client._api import (
    cancel,
    cluster_status,
    connected,
    get,
    get_async,
    get_blocking,
    init,
    is_initialized,
    local_gateway,
    put,
    runtime_context,
    shutdown,
    timeline,
    wait,
    wait_async,
    wait_blocking,
)
from qsrv.client._core import ClientCore
from qsrv.client._progress import ProgressBar
from qsrv.client._ref import ObjectRef
from qsrv.client._reservation import Reservation, reserve
from qsrv.client._runtime import Runtime, RuntimeContext, install, uninstall
from qsrv.client._tasks import RemoteFunction, distribute_task

__all__ = [
    "ClientCore", "ObjectRef", "ProgressBar", "RemoteFunction", "Reservation", "Runtime",
    "RuntimeContext",
    "cancel", "cluster_status", "connected", "distribute_task", "get", "get_async",
    "get_blocking", "init", "install", "is_initialized", "local_gateway", "put", "reserve",
    "runtime_context", "shutdown", "timeline", "uninstall", "wait", "wait_async",
    "wait_blocking",
]
