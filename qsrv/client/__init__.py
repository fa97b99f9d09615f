"""The driver side: connection, embedded local cluster, and the task API."""

from qsrv.client._api import (
    RemoteFunction,
    cancel,
    cluster_status,
    distribute_task,
    get,
    get_async,
    init,
    is_initialized,
    put,
    runtime_context,
    shutdown,
    wait,
)
from qsrv.client._ref import ObjectRef

__all__ = [
    "ObjectRef", "RemoteFunction", "cancel", "cluster_status", "distribute_task", "get",
    "get_async", "init", "is_initialized", "put", "runtime_context", "shutdown", "wait",
]
