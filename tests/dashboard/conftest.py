"""Fixtures of the dashboard tests: a real cluster started through the CLI (scheduler and two
workers), this process as its driver, and a dashboard following it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import qsrv
from qsrv.dashboard import DashboardServer
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        c.worker("w1", "--cpus", "1", "--resources", "node_w1=1")
        c.worker("w2", "--cpus", "1", "--resources", "node_w2=1")
        wait_for(lambda: c.ready({"w1", "w2"}), 60, "two workers with executors")
        yield c


@pytest.fixture
def driver(cluster: Cluster) -> Iterator[Cluster]:
    """This process joined to ``cluster``."""
    qsrv.shutdown()
    qsrv.init(cluster.address, TOKEN)
    yield cluster
    qsrv.shutdown()


@pytest.fixture
def dashboard(cluster: Cluster) -> Iterator[DashboardServer]:
    server = DashboardServer(cluster.address, TOKEN, port=0, interval=0.2)
    server.start_in_thread()
    yield server
    server.stop_thread()


def task_names(update: dict[str, Any]) -> list[str]:
    return [e[3] for e in update["events"]]
