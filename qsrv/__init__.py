"""qsrv: an asyncio-native distributed task runtime for hybrid quantum-classical workloads.

    import qsrv

    @qsrv.distribute_task(target={"cpu": 1})
    def square(x):
        return x * x

    refs = [square(i) for i in range(10)]   # ObjectRefs, at once
    print(qsrv.get(refs))                    # or: await qsrv.get(refs)
"""

from typing import TYPE_CHECKING, Any

from qsrv.client import (
    ObjectRef,
    RemoteFunction,
    Reservation,
    cancel,
    distribute_task,
    get,
    init,
    is_initialized,
    put,
    reserve,
    runtime_context,
    shutdown,
    timeline,
    wait,
)
from qsrv.client import cluster_status as status
from qsrv.errors import (
    ConfigError,
    GetTimeoutError,
    InfeasibleTaskError,
    ObjectLostError,
    QsrvError,
    ReservationError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    WorkerDiedError,
)

if TYPE_CHECKING:
    from qsrv.compat.quantum_serverless import GatewayProvider, QuantumServerless
    from qsrv.gateway import Client, Job, Program, get_arguments, save_result
    from qsrv.quantum import backends

__version__ = "0.1.0"

# The programs-and-jobs layer loads on first use: `import qsrv` stays light for tasks.
_GATEWAY_NAMES = frozenset({"Client", "Job", "Program", "get_arguments", "save_result"})


_COMPAT_NAMES = frozenset({"GatewayProvider", "QuantumServerless"})


def __getattr__(name: str) -> Any:
    if name in _GATEWAY_NAMES:
        import qsrv.gateway

        return getattr(qsrv.gateway, name)
    if name == "backends":  # loads the simulator's libraries: only on use
        import qsrv.quantum

        return qsrv.quantum.backends
    if name in _COMPAT_NAMES:
        import qsrv.compat.quantum_serverless as compat

        return getattr(compat, name)
    raise AttributeError(f"module 'qsrv' has no attribute {name!r}")


__all__ = [
    "Client",
    "ConfigError",
    "GatewayProvider",
    "GetTimeoutError",
    "InfeasibleTaskError",
    "Job",
    "ObjectLostError",
    "ObjectRef",
    "Program",
    "QsrvError",
    "QuantumServerless",
    "RemoteFunction",
    "Reservation",
    "ReservationError",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "WorkerDiedError",
    "__version__",
    "backends",
    "cancel",
    "distribute_task",
    "get",
    "get_arguments",
    "init",
    "is_initialized",
    "put",
    "reserve",
    "runtime_context",
    "save_result",
    "shutdown",
    "status",
    "timeline",
    "wait",
]
