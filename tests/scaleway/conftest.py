"""A real cluster (scheduler and one worker, started by the CLI) and a real gateway joined to it,
with the Scaleway door under ``/scaleway``: the vendors' clients, unmodified, talk to it over
loopback. One cluster and gateway per test module (starting them is the slow part); each test
gets its own project label so that listings stay its own.

qiskit-scaleway and scaleway-qaas-client need Python >= 3.12: their tests skip where they are
not installed, unless ``QSRV_REQUIRE_SCALEWAY_CLIENTS=1`` (CI sets it in the 3.12 virtual
environment it makes), where a missing client fails instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from qsrv.gateway import GatewayConfig, add_user
from tests._support.cluster import TOKEN, Cluster
from tests._support.gateway import ThreadedGateway
from tests._support.waiting import wait_for

AER = "aer.statevector.cpu"
PERCEVAL = "perceval.slos.cpu"


@dataclass(frozen=True)
class Door:
    """The gateway's Scaleway door and a user of it."""

    gateway: ThreadedGateway
    url: str  # what clients take as their API url: GATEWAY + "/scaleway"
    token: str  # alice's qsrv gateway token (the clients' secret key)
    other_token: str  # bob's
    data_dir: Path

    @property
    def api(self) -> str:
        return self.url + "/qaas/v1alpha1"


def client_module(name: str) -> ModuleType:
    """Import a client that needs Python >= 3.12: skip where it is absent, unless required."""
    if os.environ.get("QSRV_REQUIRE_SCALEWAY_CLIENTS") == "1":
        return __import__(name, fromlist=["_"])
    return pytest.importorskip(name, reason=f"{name} needs Python >= 3.12 (CI runs it there)")


def get(door: Door, path: str, **params: str) -> dict[str, Any]:
    """A GET of the door's API (``path`` under ``qaas/v1alpha1``) as alice, with plain
    requests: what a test reads besides what the client under test shows."""
    response = requests.get(door.api + path, params=params,
                            headers={"X-Auth-Token": door.token}, timeout=30)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def platform(door: Door, name: str) -> dict[str, Any]:
    """The platform called `name`, as the door lists it."""
    [found] = get(door, "/platforms", name=name)["platforms"]
    return found  # type: ignore[no-any-return]


def sessions(door: Door, project: str) -> list[dict[str, Any]]:
    """Alice's sessions of `project`, as the door lists them."""
    return get(door, "/sessions", project_id=project)["sessions"]  # type: ignore[no-any-return]


def _platform_names(door: Door) -> set[str]:
    return {p["name"] for p in get(door, "/platforms")["platforms"]}


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    data_dir = tmp_path_factory.mktemp("scaleway") / "data"
    with Cluster() as cluster:
        cluster.worker("w1", "--cpus", "2")
        wait_for(lambda: cluster.ready({"w1"}), timeout=60, what="the worker")
        config = GatewayConfig(data_dir=data_dir, port=0, cluster_address=cluster.address,
                               cluster_token=TOKEN, stop_grace_s=2.0,
                               log_flush_interval_s=0.1)
        gateway = ThreadedGateway(config)
        try:
            alice = add_user(data_dir, "alice")[1]
            bob = add_user(data_dir, "bob")[1]
            found = Door(gateway, gateway.url + "/scaleway", alice, bob, data_dir)
            # The worker advertises its engines once it has probed them.
            wait_for(lambda: {AER, PERCEVAL} <= _platform_names(found), timeout=60,
                     what="the worker's Aer and Perceval platforms")
            yield found
        finally:
            gateway.stop()


@pytest.fixture
def project() -> str:
    """A project label of this test's own (Scaleway project ids are UUIDs)."""
    return str(uuid.uuid4())


@pytest.fixture(autouse=True)
def _no_inherited_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SCW_SECRET_KEY", "SCW_PROJECT_ID", "SCW_API_URL", "SCALEWAY_CLOUD_TOKEN",
                 "QISKIT_SCALEWAY_SECRET_KEY", "QISKIT_SCALEWAY_PROJECT_ID",
                 "QISKIT_SCALEWAY_API_URL", "QSRV_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
