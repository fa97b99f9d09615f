"""What the scheduler decides reaches the dashboard: failures no executor reported (infeasible,
cancelled, a failed argument, a worker lost with no retry left) with their reasons, and the
copies of stored values pulled between nodes (/metrics, parsed with prometheus_client)."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import qsrv
from qsrv.dashboard import DashboardServer
from qsrv.errors import InfeasibleTaskError, TaskCancelledError, WorkerDiedError
from tests._support import stop_process, wait_for
from tests._support.cluster import TOKEN, Cluster

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(url: str) -> Samples:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def make_vector(n: int) -> Any:
    return np.full(n, 1 / np.sqrt(n), dtype=np.complex128)


def norm(x: Any) -> float:
    return float(np.linalg.norm(x))


def slow(x: Any) -> None:
    time.sleep(600)  # the work a lost worker was doing


def _worker_id(cluster: Cluster, name: str) -> int:
    return next(int(w["id"]) for w in cluster.status()["workers"] if w["name"] == name)


def test_transfers_between_nodes_are_counted(driver: Cluster,
                                             dashboard: DashboardServer) -> None:
    w1, w2 = _worker_id(driver, "w1"), _worker_id(driver, "w2")
    url = dashboard.url + "metrics"
    wait_for(lambda: _scrape(url)[("qsrv_scheduler_up", ())] == 1, 30, "the dashboard's feed")
    before = _scrape(url)
    vector = qsrv.distribute_task(make_vector).options(target={"node_w1": 1})(1 << 16)
    # 1 MiB made in w1's store, read on w2: one copy pulled by w2, none by w1
    assert qsrv.get(qsrv.distribute_task(norm).options(target={"node_w2": 1})(vector)) \
        == pytest.approx(1.0)

    def counted() -> Samples | None:
        m = _scrape(url)
        pulled = _sum(m, "qsrv_transfers_total", worker=str(w2)) \
            - _sum(before, "qsrv_transfers_total", worker=str(w2))
        return m if pulled >= 1 else None

    after = wait_for(counted, 30, "the transfer in /metrics")
    assert _sum(after, "qsrv_transfers_total", worker=str(w2)) \
        - _sum(before, "qsrv_transfers_total", worker=str(w2)) == 1
    assert _sum(after, "qsrv_transfers_total", worker=str(w1)) \
        == _sum(before, "qsrv_transfers_total", worker=str(w1))
    moved = _sum(after, "qsrv_transfer_bytes_total", worker=str(w2)) \
        - _sum(before, "qsrv_transfer_bytes_total", worker=str(w2))
    assert (1 << 20) <= moved < (1 << 20) + (1 << 16)


def test_failures_the_scheduler_decides_reach_the_dashboard(
        driver: Cluster, dashboard: DashboardServer) -> None:
    url = dashboard.url + "metrics"
    wait_for(lambda: _scrape(url)[("qsrv_scheduler_up", ())] == 1, 30, "the dashboard's feed")
    before = _scrape(url)

    def nowhere() -> int:
        return 1

    def after_it(x: int) -> int:
        return x + 1

    # no worker has 'nowhere': with a timeout it fails as infeasible, with its reason
    infeasible = qsrv.distribute_task(nowhere).options(target={"nowhere": 1}, timeout=1.0)()
    dependent = qsrv.distribute_task(after_it)(infeasible)
    cancelled = qsrv.distribute_task(nowhere).options(target={"nowhere": 1})()
    qsrv.cancel(cancelled)
    with pytest.raises(InfeasibleTaskError):
        qsrv.get(infeasible, timeout=60)
    with pytest.raises(InfeasibleTaskError):
        qsrv.get(dependent, timeout=60)
    with pytest.raises(TaskCancelledError):
        qsrv.get(cancelled, timeout=60)

    # a worker lost while its task runs, no retry left
    driver.worker("w3", "--cpus", "1", "--resources", "doomed=1")
    wait_for(lambda: driver.ready({"w3"}), 60, "worker w3")
    lost = qsrv.distribute_task(slow).options(target={"doomed": 1}, max_retries=0)(0)
    wait_for(lambda: any(w["name"] == "w3" and w["running"] == 1
                         for w in driver.status()["workers"]), 60, "the task running on w3")
    stop_process(driver.workers.pop("w3"), tree=True)
    with pytest.raises(WorkerDiedError):
        qsrv.get(lost, timeout=60)

    def failures() -> dict[int, dict[str, Any]] | None:
        seen = {f["task_id"]: f for f in dashboard.feed.failures}
        ids = [int(r.id, 16) for r in (infeasible, dependent, cancelled, lost)]
        got = {k: seen[k] for k in ids if k in seen}
        return got if len(got) == 4 else None

    got = wait_for(failures, 30, "the four failures on the dashboard")
    by_kind = {f["kind"]: f for f in got.values()}
    assert set(by_kind) == {"infeasible", "dependency", "cancelled", "worker_died"}
    assert "nowhere" in by_kind["infeasible"]["reason"]
    assert by_kind["infeasible"]["function"].endswith("nowhere")
    assert "nowhere" in by_kind["dependency"]["reason"] \
        and "infeasible" in by_kind["dependency"]["reason"]
    assert by_kind["dependency"]["function"].endswith("after_it")
    assert "cancelled" in by_kind["cancelled"]["traceback"]
    assert by_kind["worker_died"]["worker"] != 0 and by_kind["worker_died"]["pid"] != 0
    assert "no retries left" in by_kind["worker_died"]["reason"]

    m = wait_for(lambda: (m := _scrape(url)) and _sum(m, "qsrv_task_failures_total",
                                                        kind="worker_died")
                 > _sum(before, "qsrv_task_failures_total", kind="worker_died") and m,
                 30, "the failures counted in /metrics")
    for kind in ("infeasible", "dependency", "cancelled", "worker_died"):
        assert _sum(m, "qsrv_task_failures_total", kind=kind) \
            - _sum(before, "qsrv_task_failures_total", kind=kind) == 1, kind
    failed = {fn.rsplit(".", 1)[-1]: _sum(m, "qsrv_tasks_finished_total", function=fn,
                                          outcome="failed")
              - _sum(before, "qsrv_tasks_finished_total", function=fn, outcome="failed")
              for (n, ls), _ in m.items() if n == "qsrv_tasks_finished_total"
              for fn in [dict(ls)["function"]]}
    assert failed["nowhere"] == 2 and failed["after_it"] == 1 and failed["slow"] == 1
