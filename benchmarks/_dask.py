"""Dask, driven the way every benchmark drives a system (see `_common.Cluster`).

``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, dashboard off: the
scheduler (and the nannies) run inside the client's process, each worker process holds its own
data. There is no separate two-node cluster: `Nodes` is the same cluster, and
``task(fn, node="a"|"b")`` pins to the first or second worker (``workers=[address]``,
``allow_other_workers=False``). Put is ``scatter(hash=False)``; every submit is ``pure=False``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import psutil
from _common import WORKERS, cmdline


class Local:
    name = "dask"

    def __init__(self, workers: int = WORKERS, **_: Any) -> None:
        import distributed

        self.dd: Any = distributed
        self.cluster: Any = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        self.client: Any = distributed.Client(self.cluster)
        # the scheduler lives in this process: its memory is the client's RSS
        assert self.cluster.scheduler is not None
        self.gather = self.client.gather
        self.setup = (f"LocalCluster(n_workers={workers}, threads_per_worker=1): each worker "
                      "process holds its own data; the nodes case pins workers=[address]")
        self._workers: list[str] = []

    def task(self, fn: Callable[..., Any], *, resources: dict[str, float] | None = None,
             node: str | None = None) -> Callable[..., Any]:
        options: dict[str, Any] = {"pure": False}
        if resources:
            options["resources"] = resources
        if node:
            if not self._workers:
                self._workers = sorted(self.client.scheduler_info()["workers"])
            options.update(workers=[self._workers["ab".index(node)]], allow_other_workers=False)
        return functools.partial(self.client.submit, fn, **options)

    def get(self, ref: Any) -> Any:
        return ref.result()

    def put(self, value: Any) -> Any:
        return self.client.scatter(value, hash=False)

    def ready(self, ref: Any) -> None:
        self.dd.wait([ref])

    def queued(self) -> int | None:
        return len(self.cluster.scheduler.unrunnable)  # tasks in state "no-worker"

    def server_pids(self) -> dict[str, int]:
        return {}  # the scheduler is in the driver's process

    def role(self, proc: psutil.Process) -> str:
        args = " ".join(cmdline(proc))
        if "from multiprocessing" in args and "spawn_main" in args:
            return "workers"
        return "other (resource tracker)"

    def shutdown(self) -> None:
        self.client.close(timeout=20)
        self.cluster.close(timeout=20)


Nodes = Local
