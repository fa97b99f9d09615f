"""Ray, driven the way every benchmark drives a system (see `_common.Cluster`).

* `Local`: ``ray.init(num_cpus=2)``, dashboard off: one raylet and one plasma store.
* `Nodes`: ``ray.cluster_utils.Cluster`` with two raylets (head ``node_a`` + ``node_b``, one
  CPU and one plasma store each); ``task(fn, node="a")`` asks for ``resources={"node_a": 1}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import psutil
from _common import WORKERS, descendants


def _ray() -> Any:
    os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")
    import ray

    return ray


class Local:
    name = "ray"

    def __init__(self, workers: int = WORKERS, object_store_memory: int | None = None) -> None:
        self.ray = _ray()
        self._connect(workers, object_store_memory)
        self.get = self.gather = self.ray.get
        self.put = self.ray.put

    def _connect(self, workers: int, object_store_memory: int | None) -> None:
        self.ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.ERROR,
                      log_to_driver=False, object_store_memory=object_store_memory)
        self.setup = f"ray.init(num_cpus={workers}): one raylet, one plasma store"

    def task(self, fn: Callable[..., Any], *, resources: dict[str, float] | None = None,
             node: str | None = None) -> Callable[..., Any]:
        if node:
            resources = {f"node_{node}": 1}
        options: dict[str, Any] = {"num_cpus": 1}
        if resources:
            options["resources"] = resources
        return self.ray.remote(**options)(fn).remote  # type: ignore[no-any-return]

    def ready(self, ref: Any) -> None:
        self.ray.wait([ref], num_returns=1, fetch_local=False)

    def queued(self) -> int | None:
        return None

    def server_pids(self) -> dict[str, int]:
        found = {}
        for proc in descendants():
            name = _name(proc)
            if name in ("raylet", "gcs_server"):
                found[name] = proc.pid
        if set(found) != {"raylet", "gcs_server"}:
            raise RuntimeError(f"raylet/gcs_server not found among the driver's children: {found}")
        return found

    def role(self, proc: psutil.Process) -> str:
        name = _name(proc)
        if name in ("raylet", "gcs_server"):
            return name
        if name.startswith("ray::") and "Agent" not in name:
            return "workers"
        return "other (agents, monitors)"

    def shutdown(self) -> None:
        self.ray.shutdown()


def _name(proc: psutil.Process) -> str:
    try:
        return str(proc.name())
    except psutil.Error:
        return ""


class Nodes(Local):
    def _connect(self, workers: int, object_store_memory: int | None) -> None:
        from ray import cluster_utils

        store = {"object_store_memory": object_store_memory} if object_store_memory else {}
        self.cluster: Any = cluster_utils.Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "resources": {"node_a": 1},
                            "include_dashboard": False, **store})
        try:
            self.cluster.add_node(num_cpus=1, resources={"node_b": 1}, **store)
            self.ray.init(address=self.cluster.address, log_to_driver=False,
                          logging_level=logging.ERROR)
            self.cluster.wait_for_nodes()
        except BaseException:
            self.cluster.shutdown()
            raise
        nodes = len([x for x in self.ray.nodes() if x.get("Alive")])
        self.setup = (f"ray.cluster_utils.Cluster: {nodes} raylets (head node_a + node_b), "
                      "one plasma store each, driver on the head")

    def shutdown(self) -> None:
        try:
            self.ray.shutdown()
        finally:
            self.cluster.shutdown()
