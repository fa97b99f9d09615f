"""The process's runtime: its client core, and what carries it.

At most one `Runtime` is installed per process (`active`):

- in a driver, by `qsrv.init()` (or the first `put`/`get`/task call, which runs `init()`):
  the core, the `Driver` connection, and the `LocalCluster` when this process started one;
- in an executor subprocess, by the executor itself: the core, and where the running task
  runs (`task_context`).

Everything that needs "the cluster connection of this process" reads `active`; nothing else is
process-global. The runtime is replaced as a whole (on `shutdown()` or a reconnect), never
patched field by field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime is read by ObjectRef, which the core itself imports
    from qsrv.client._core import ClientCore
    from qsrv.client._driver import Driver
    from qsrv.client._local import LocalCluster


@dataclass(frozen=True)
class RuntimeContext:
    """Where the current task runs; `qsrv.runtime_context()` returns it inside a task."""

    task_id: str
    worker_id: int
    node: str
    pid: int
    gpu_ids: tuple[str, ...]
    resources: dict[str, float]


@dataclass(frozen=True, eq=False)
class Runtime:
    """This process's connection to the cluster.

    A driver's runtime has `driver` (and `cluster` when it started a local one); an executor's
    has `task_context`, which describes the task running now.
    """

    core: ClientCore
    driver: Driver | None = None
    cluster: LocalCluster | None = None
    task_context: Callable[[], RuntimeContext] | None = None

    @property
    def in_executor(self) -> bool:
        return self.task_context is not None


active: Runtime | None = None


def install(runtime: Runtime) -> None:
    global active
    active = runtime


def uninstall() -> Runtime | None:
    """Remove the installed runtime (the caller closes it); returns it."""
    global active
    runtime, active = active, None
    return runtime
