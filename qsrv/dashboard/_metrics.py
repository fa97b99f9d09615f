"""Prometheus metrics of the cluster, from the dashboard's feed (prometheus-client).

A collector reads the latest monitor update when scraped: nothing is counted twice and
nothing is kept beyond what the feed holds. Counters are the scheduler's own (they restart
at zero with it, as Prometheus expects of a restarted target).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from qsrv.dashboard._source import Feed

__all__ = ["ClusterCollector", "cluster_registry"]

_SIZES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def _number(value: Any) -> float | None:
    """A resource amount as status shows it (2.0, "23.5 GiB") as a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        parts = value.split()
        if len(parts) == 2 and parts[1] in _SIZES:
            try:
                return float(parts[0]) * _SIZES[parts[1]]
            except ValueError:
                return None
    return None


def _histogram(name: str, doc: str, buckets: list[float], counts: list[int],
               total: float) -> HistogramMetricFamily:
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip([*buckets, float("inf")], counts, strict=False):
        running += n
        cumulative.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


class ClusterCollector(Collector):
    def __init__(self, feed: Feed) -> None:
        self.feed = feed

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("qsrv_scheduler_up",
                               "1 when the dashboard follows the scheduler")
        latest = self.feed.latest
        up.add_metric([], 0.0 if latest is None or self.feed.error else 1.0)
        yield up
        if latest is None:
            return
        status = latest.get("status", {})
        totals = latest.get("totals", {})
        submitted = CounterMetricFamily("qsrv_tasks_submitted", "Tasks submitted",
                                        labels=["function"])
        finished = CounterMetricFamily("qsrv_tasks_finished",
                                       "Tasks that ran to an end, by outcome",
                                       labels=["function", "outcome"])
        run_seconds = CounterMetricFamily("qsrv_task_run_seconds_by_function",
                                          "Seconds tasks' functions ran", labels=["function"])
        for name, (sub, done, failed, seconds, _longest) in latest.get("functions", {}).items():
            submitted.add_metric([name], sub)
            finished.add_metric([name, "done"], done)
            finished.add_metric([name, "failed"], failed)
            run_seconds.add_metric([name], seconds)
        yield submitted
        yield finished
        yield run_seconds
        failures = CounterMetricFamily(
            "qsrv_task_failures", "Task failures by kind: error (the task's own), retried, "
            "or what the scheduler decided (cancelled, timeout, worker_died, reservation, "
            "lost, dependency...)", labels=["kind"])
        for kind, n in latest.get("failure_kinds", {}).items():
            failures.add_metric([kind], n)
        yield failures
        transfers = CounterMetricFamily("qsrv_transfers",
                                        "Stored values copied between nodes, by the worker "
                                        "that pulled them", labels=["worker"])
        transfer_bytes = CounterMetricFamily("qsrv_transfer_bytes",
                                             "Bytes of stored values copied between nodes, by "
                                             "the worker that pulled them", labels=["worker"])
        for wid, (count, size) in latest.get("transfers", {}).items():
            transfers.add_metric([wid], count)
            transfer_bytes.add_metric([wid], size)
        yield transfers
        yield transfer_bytes
        sampled = CounterMetricFamily("qsrv_task_events_sampled_out",
                                      "Task events not kept (above the sampling rate)")
        sampled.add_metric([], totals.get("sampled_out", 0))
        yield sampled
        tasks = GaugeMetricFamily("qsrv_tasks", "Unfinished tasks by state", labels=["state"])
        for state, n in status.get("tasks", {}).items():
            tasks.add_metric([state], n)
        yield tasks
        hist = latest.get("histograms", {})
        buckets = hist.get("buckets", [])
        if buckets:
            yield _histogram("qsrv_task_run_seconds", "Run time of tasks (executor's clock)",
                             buckets, hist["run"], hist["run_sum"])
            yield _histogram("qsrv_task_queue_wait_seconds",
                             "Time from submission to start", buckets, hist["wait"],
                             hist["wait_sum"])
        lag = GaugeMetricFamily("qsrv_scheduler_loop_lag_seconds",
                                "How late the scheduler's event loop ran", labels=["stat"])
        for stat, ms in status.get("scheduler", {}).get("loop_lag_ms", {}).items():
            lag.add_metric([stat], ms / 1e3)
        yield lag
        objects = GaugeMetricFamily("qsrv_objects", "Values the scheduler's directory holds")
        objects.add_metric([], status.get("objects", 0))
        yield objects
        clients = GaugeMetricFamily("qsrv_clients", "Drivers connected")
        clients.add_metric([], status.get("clients", 0))
        yield clients
        workers = status.get("workers", [])
        count = GaugeMetricFamily("qsrv_workers", "Workers registered")
        count.add_metric([], len(workers))
        yield count
        executors = GaugeMetricFamily("qsrv_executors", "Executors by worker",
                                      labels=["worker"])
        running = GaugeMetricFamily("qsrv_executors_running", "Executors running a task",
                                    labels=["worker"])
        total = GaugeMetricFamily("qsrv_worker_resource_total", "A worker's resources",
                                  labels=["worker", "resource"])
        free = GaugeMetricFamily("qsrv_worker_resource_free", "A worker's free resources",
                                 labels=["worker", "resource"])
        heartbeat = GaugeMetricFamily("qsrv_worker_heartbeat_age_seconds",
                                      "Seconds since a worker's last heartbeat",
                                      labels=["worker"])
        store_used = GaugeMetricFamily("qsrv_store_bytes_used", "Object store bytes in use",
                                       labels=["worker"])
        store_cap = GaugeMetricFamily("qsrv_store_bytes_capacity", "Object store capacity",
                                      labels=["worker"])
        store_objects = GaugeMetricFamily("qsrv_store_objects", "Objects in a node's store",
                                          labels=["worker"])
        pinned = GaugeMetricFamily("qsrv_store_pinned", "Objects pinned in a node's store",
                                   labels=["worker"])
        spilled = GaugeMetricFamily("qsrv_store_spilled", "Objects spilled to disk",
                                    labels=["worker"])
        spilled_bytes = GaugeMetricFamily("qsrv_store_spilled_bytes", "Bytes spilled to disk",
                                          labels=["worker"])
        evictions = CounterMetricFamily("qsrv_store_evictions", "Copies evicted from a store",
                                        labels=["worker"])
        extra = latest.get("workers", {})
        for w in workers:
            wid = str(w["id"])
            executors.add_metric([wid], w.get("executors", 0))
            running.add_metric([wid], w.get("running", 0))
            for res, amount in w.get("total", {}).items():
                v = _number(amount)
                if v is not None:
                    total.add_metric([wid, res], v)
            for res, amount in w.get("free", {}).items():
                v = _number(amount)
                if v is not None:
                    free.add_metric([wid, res], v)
            if wid in extra:
                heartbeat.add_metric([wid], extra[wid].get("heartbeat_age", 0.0))
            stats = (w.get("info") or {}).get("store_stats")
            if isinstance(stats, dict):
                for family, key in ((store_used, "used"), (store_cap, "capacity"),
                                    (store_objects, "objects"), (spilled, "spilled"),
                                    (spilled_bytes, "spilled_bytes"), (evictions, "evictions"),
                                    (pinned, "pinned")):
                    if isinstance(stats.get(key), int | float):
                        family.add_metric([wid], stats[key])
        yield from (executors, running, total, free, heartbeat, store_used, store_cap,
                    store_objects, pinned, spilled, spilled_bytes, evictions)


def cluster_registry(feed: Feed) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(feed))
    return registry
