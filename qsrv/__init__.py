"""qsrv: an asyncio-native distributed task runtime for hybrid quantum-classical workloads.

    import qsrv

    @qsrv.distribute_task(target={"cpu": 1})
    def square(x):
        return x * x

    refs = [square(i) for i in range(10)]   # ObjectRefs, at once
    print(qsrv.get(refs))                    # or: await qsrv.get(refs)
"""

from qsrv.client import (
    ObjectRef,
    RemoteFunction,
    cancel,
    distribute_task,
    get,
    init,
    is_initialized,
    put,
    runtime_context,
    shutdown,
    wait,
)
from qsrv.client import cluster_status as status
from qsrv.errors import (
    ConfigError,
    GetTimeoutError,
    InfeasibleTaskError,
    ObjectLostError,
    QsrvError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    WorkerDiedError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "GetTimeoutError",
    "InfeasibleTaskError",
    "ObjectLostError",
    "ObjectRef",
    "QsrvError",
    "RemoteFunction",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "WorkerDiedError",
    "__version__",
    "cancel",
    "distribute_task",
    "get",
    "init",
    "is_initialized",
    "put",
    "runtime_context",
    "shutdown",
    "status",
    "wait",
]
