"""A real multi-process cluster started through the CLI: a scheduler and three workers with
different resources (one declaring a GPU it does not have), joined by this test as a driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import qsrv
from qsrv.errors import AuthenticationError
from tests._support import Flag, stop_processes, wait_for
from tests._support.cluster import TOKEN, Cluster, cli_env, cli_status


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    qsrv.shutdown()
    c = Cluster()
    try:
        c.worker("plain", "--cpus", "2")
        c.worker("gpu", "--cpus", "1", "--gpus", "1")
        c.worker("qpu", "--cpus", "1", "--resources", "qpu=1,aer=1", "--memory", "2GB")
        wait_for(lambda: c.ready({"plain", "gpu", "qpu"}), what="three workers")
        qsrv.init(address=c.address, token=TOKEN)
        yield c
    finally:
        qsrv.shutdown()
        c.stop()


@qsrv.distribute_task
def where() -> tuple[str, str]:
    return str(qsrv.runtime_context().worker_id), os.environ["CUDA_VISIBLE_DEVICES"]


def _names(cluster: Cluster) -> dict[str, str]:
    return {str(w["id"]): w["name"] for w in cluster.status()["workers"]}


def test_status_shows_workers_and_resources(cluster: Cluster) -> None:
    workers = {w["name"]: w for w in cluster.status()["workers"]}
    assert workers["plain"]["total"]["cpu"] == 2.0
    assert workers["gpu"]["total"]["gpu"] == 1.0 and workers["gpu"]["gpu_ids"] == ["0"]
    assert workers["qpu"]["total"]["qpu"] == 1.0 and workers["qpu"]["total"]["aer"] == 1.0
    assert workers["qpu"]["total"]["memory"] == "1.9 GiB"  # 2 GB
    text = cli_status(cluster.address).stdout
    assert "3 worker(s)" in text and "qpu=1.0" in text


def test_gpu_tasks_land_only_on_the_gpu_worker(cluster: Cluster) -> None:
    names = _names(cluster)
    results = qsrv.get([where.options(target={"gpu": 1, "cpu": 0})() for _ in range(12)])
    assert {names[w] for w, _ in results} == {"gpu"}
    assert {cuda for _, cuda in results} == {"0"}
    plain = qsrv.get([where() for _ in range(12)])
    assert {cuda for _, cuda in plain} == {""}  # tasks without GPUs see none


def test_infeasible_task_is_reported_by_status(cluster: Cluster) -> None:
    ref = where.options(target={"cpu": 8})()
    wait_for(lambda: cluster.status()["tasks"]["infeasible"] == 1, what="infeasible count")
    text = cli_status(cluster.address).stdout
    assert "infeasible=1" in text and "'cpu': 8.0" in text and "largest offered" in text
    qsrv.cancel(ref)
    wait_for(lambda: cluster.status()["tasks"]["infeasible"] == 0, what="cancel")


def test_thousand_tasks_with_mixed_targets(cluster: Cluster) -> None:
    names = _names(cluster)
    targets = [{"cpu": 1}, {"cpu": 0.5}, {"gpu": 1, "cpu": 0}, {"qpu": 1},
               {"memory": "1GB", "cpu": 0.25}, {"aer": 0.5, "cpu": 0.5}]
    refs = [(i % len(targets), where.options(target=targets[i % len(targets)])())
            for i in range(1000)]
    results = qsrv.get([r for _, r in refs], timeout=240)
    placed: dict[int, Counter[str]] = {}
    for (kind, _), (worker, _) in zip(refs, results, strict=True):
        placed.setdefault(kind, Counter())[names[worker]] += 1
    assert sum(sum(c.values()) for c in placed.values()) == 1000
    assert set(placed[2]) == {"gpu"}
    assert set(placed[3]) == {"qpu"} and set(placed[5]) == {"qpu"}
    assert set(placed[0]) >= {"plain"}  # plain CPU work spreads over the workers


def test_worker_that_goes_away_gives_its_tasks_back(
        cluster: Cluster, flags: Callable[[str], Flag]) -> None:
    def names() -> set[str]:
        return {w["name"] for w in cluster.status()["workers"]}

    cluster.worker("spare-1", "--cpus", "1", "--resources", "spare=1")
    try:
        wait_for(lambda: cluster.ready({"spare-1"}), what="spare-1")

        @qsrv.distribute_task(target={"spare": 1}, max_retries=2)
        def on_spare(started: Flag, release: Flag) -> str:
            started.set()
            release.wait()
            return str(qsrv.runtime_context().worker_id)

        started, release = flags("started"), flags("release")
        ref = on_spare(started, release)
        started.wait()
        cluster.workers["spare-1"].send_signal(signal.SIGKILL)  # no goodbye: connection loss
        wait_for(lambda: "spare-1" not in names(), what="worker removal")
        cluster.worker("spare-2", "--cpus", "1", "--resources", "spare=1")
        release.set()
        worker = qsrv.get(ref, timeout=60)
        assert _names(cluster)[worker] == "spare-2"
    finally:  # the other tests see the three workers they expect
        stop_processes([cluster.workers.pop(name) for name in ("spare-1", "spare-2")
                        if name in cluster.workers])
        wait_for(lambda: not names() & {"spare-1", "spare-2"}, what="the spares to go")


def test_task_from_a_helper_module_in_the_working_directory(
        cluster: Cluster, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers cannot import a module that lives only beside the driver: it travels by
    value (as for a program's helper modules in a gateway job)."""
    (tmp_path / "helper_mod_xyz.py").write_text(
        "import qsrv\n"
        "OFFSET = 40\n"
        "@qsrv.distribute_task\n"
        "def shifted(x):\n    return x + OFFSET\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    helper = importlib.import_module("helper_mod_xyz")
    assert qsrv.get(helper.shifted(2), timeout=30) == 42


def test_wrong_token_is_refused(cluster: Cluster) -> None:
    from qsrv.transport import SyncConnection

    with pytest.raises(AuthenticationError):
        SyncConnection(cluster.address, "not-the-token", "driver")
    out = cli_status(cluster.address, "--token", "not-the-token")
    assert out.returncode == 1 and "token" in out.stderr


def test_binding_beyond_loopback_needs_a_token() -> None:
    env = cli_env()
    env.pop("QSRV_TOKEN")
    out = subprocess.run([sys.executable, "-m", "qsrv", "scheduler", "--host", "0.0.0.0",
                          "--port", "0"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "without a token" in out.stderr


@pytest.mark.parametrize("command, options", [
    ("scheduler", ["--host", "--port", "--token", "--heartbeat-timeout"]),
    ("worker", ["--address", "--token", "--cpus", "--gpus", "--memory", "--resources"]),
    ("status", ["--address", "--token", "--json"]),
])
def test_help_is_complete(command: str, options: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "qsrv", command, "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for option in options:
        assert option in out.stdout
