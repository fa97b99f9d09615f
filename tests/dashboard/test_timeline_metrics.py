"""The timeline (qsrv.timeline, qsrv timeline) and /metrics, against the work really done."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import qsrv
from qsrv.dashboard import DashboardServer
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster, cli_env


def where(i: int) -> tuple[str, int, int]:
    ctx = qsrv.runtime_context()
    return ctx.task_id, ctx.worker_id, ctx.pid


def fails(i: int) -> None:
    raise ValueError(f"failure number {i}")


def _complete_events(trace: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The trace's complete events by task id."""
    out: dict[str, dict[str, Any]] = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            assert e["args"]["task_id"] not in out, "two events for one task"
            out[e["args"]["task_id"]] = e
    return out


def test_timeline_has_one_event_per_task_on_its_worker_and_executor(driver: Cluster,
                                                                      tmp_path: Path) -> None:
    task = qsrv.distribute_task(where)
    ran = qsrv.get([task(i) for i in range(40)])
    trace = qsrv.timeline()
    json.loads(json.dumps(trace))  # plain JSON
    events = _complete_events(trace)
    for task_id, worker_id, pid in ran:
        key = f"{int(task_id, 16):#x}" if not task_id.startswith("0x") else task_id
        e = events[key]
        assert e["name"].endswith("where")
        assert (e["pid"], e["tid"]) == (worker_id, pid)
        assert e["dur"] >= 0 and e["ts"] > 0
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    registered = {w["id"]: w["name"] for w in driver.status()["workers"]}
    assert all(names[w] == f"worker {w} ({registered[w]})" for _, w, _ in ran)
    # the command line writes the same events to a file
    out = tmp_path / "trace.json"
    done = subprocess.run([sys.executable, "-m", "qsrv", "timeline", "--address",
                           driver.address, "--output", str(out), "--since", "10m"],
                          env=cli_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    written = _complete_events(json.loads(out.read_text()))
    assert {f"{int(t, 16):#x}" for t, _, _ in ran} <= set(written)
    bad = subprocess.run([sys.executable, "-m", "qsrv", "timeline", "--address",
                          driver.address, "--since", "yesterday"], env=cli_env(),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--since" in bad.stderr


def _scrape(url: str, token: str | None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_count_the_work_done(driver: Cluster, dashboard: DashboardServer) -> None:
    ok_task = qsrv.distribute_task(where)
    bad_task = qsrv.distribute_task(fails)
    qsrv.get([ok_task(i) for i in range(30)])
    for ref in [bad_task(i) for i in range(5)]:
        with pytest.raises(ValueError):
            qsrv.get(ref)
    metrics_url = dashboard.url + "metrics"

    def counted() -> dict[Any, float] | None:
        m = _scrape(metrics_url, TOKEN)
        done = sum(v for (n, labels), v in m.items() if n == "qsrv_tasks_finished_total"
                   and dict(labels)["function"].endswith("where")
                   and dict(labels)["outcome"] == "done")
        failed = sum(v for (n, labels), v in m.items() if n == "qsrv_tasks_finished_total"
                     and dict(labels)["function"].endswith("fails")
                     and dict(labels)["outcome"] == "failed")
        return m if done >= 30 and failed >= 5 else None

    m = wait_for(counted, 30, "the dashboard's metrics to count the tasks")
    finished = {dict(k[1])["function"].rsplit(".", 1)[-1] + "/" + dict(k[1])["outcome"]: v
                for k, v in m.items() if k[0] == "qsrv_tasks_finished_total"}
    # this test's tasks only: the module's cluster also ran the other tests' tasks
    assert finished["fails/failed"] == 5 and finished["fails/done"] == 0
    assert m[("qsrv_workers", ())] == 2
    assert m[("qsrv_scheduler_up", ())] == 1
    runs = m[("qsrv_task_run_seconds_count", ())]
    assert runs == sum(v for k, v in m.items() if k[0] == "qsrv_tasks_finished_total")
    submitted = {dict(k[1])["function"].rsplit(".", 1)[-1]: v for k, v in m.items()
                 if k[0] == "qsrv_tasks_submitted_total"}
    assert submitted["fails"] == 5
    with pytest.raises(urllib.error.HTTPError) as refused:
        _scrape(metrics_url, None)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as refused:
        _scrape(metrics_url, "wrong-token")
    assert refused.value.code == 401


def test_gateway_metrics_count_requests_and_jobs(cluster: Cluster, tmp_path: Path) -> None:
    from qsrv.gateway import Client, GatewayConfig, Program, add_user
    from tests._support.gateway import ThreadedGateway

    data = tmp_path / "data"
    gateway = ThreadedGateway(GatewayConfig(data_dir=data, port=0,
                                            cluster_address=cluster.address,
                                            cluster_token=TOKEN, stop_grace_s=2.0))
    try:
        alice = add_user(data, "alice")[1]
        src = tmp_path / "prog"
        src.mkdir()
        (src / "main.py").write_text("print('hi')\n")
        client = Client(gateway.url, alice)
        for _ in range(2):
            client.run(Program(title="p", entrypoint="main.py",
                               working_dir=str(src))).result(timeout=120)
        for _ in range(3):
            urllib.request.urlopen(gateway.url + "/health").read()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(gateway.url + "/v1/jobs")  # no token: 401
        m = _scrape(gateway.url + "/metrics", TOKEN)
    finally:
        gateway.stop()
    requests = {(d["route"], d["method"], d["status"]): v for (n, labels), v in m.items()
                if n == "qsrv_gateway_requests_total" for d in [dict(labels)]}
    assert requests[("/health", "GET", "200")] == 3
    assert requests[("/v1/jobs", "GET", "401")] == 1
    assert requests[("/v1/jobs", "POST", "201")] == 2
    assert m[("qsrv_gateway_jobs", (("status", "SUCCEEDED"),))] == 2
    assert m[("qsrv_gateway_request_seconds_count", (("route", "/health"),))] == 3
