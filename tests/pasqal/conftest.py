"""Fixtures for the Pasqal Cloud door: a real cluster (scheduler and a worker, processes of
their own, started through the CLI), a real gateway joined to it (in a thread of this
process), users alice and bob, and the real ``pasqal-cloud`` SDK, unmodified, pointed at the
gateway's ``/pasqal`` door with a token provider returning a qsrv gateway token.

Sequences are Pulser's own, built on ``AnalogDevice`` (the emulator platform's device is
AnalogDevice under qsrv's name, holding up to 12 atoms). Each test module has its own cluster
and gateway (a gateway's quantum service drives the cluster from this process)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qsrv.gateway import GatewayConfig, add_user
from tests._support import wait_for
from tests._support.cluster import TOKEN, Cluster
from tests._support.gateway import ThreadedGateway

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from pasqal_cloud import SDK
    from pasqal_cloud.authentication import TokenProvider
    from pasqal_cloud.endpoints import Endpoints

PROJECT = "0b6c4a52-6f0e-4a55-9d3c-2f8e7d1c9a01"  # Pasqal project ids are UUIDs


class QsrvToken(TokenProvider):
    """What a user writes: a token provider returning their qsrv gateway token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self) -> str:
        return self.token


def new_project() -> str:
    return str(uuid.uuid4())


def make_sdk(url: str, token: str, project: str = PROJECT) -> SDK:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return SDK(project_id=project, token_provider=QsrvToken(token),
                   endpoints=Endpoints(core=url + "/pasqal/core",
                                       account=url + "/pasqal/account"))


def sequence(atoms: int = 2, duration: int = 200, variable: bool = True) -> Any:
    """A Pulser sequence on AnalogDevice: ``atoms`` in a row, one global Rydberg pulse of
    amplitude ``omega_max`` (a variable) for ``duration`` ns, then a measurement."""
    from pulser import Pulse, Register, Sequence
    from pulser.devices import AnalogDevice

    register = Register({f"q{i}": (6.0 * (i % 4), 6.0 * (i // 4)) for i in range(atoms)})
    seq = Sequence(register, AnalogDevice)
    seq.declare_channel("rydberg", "rydberg_global")
    omega = seq.declare_variable("omega_max") if variable else 6.0
    seq.add(Pulse.ConstantPulse(duration, omega, 0.0, 0.0), "rydberg")
    seq.measure("ground-rydberg")
    return seq


def simulate(seq: Any, runs: int, seed: int, **variables: Any) -> dict[str, int]:
    """pulser-simulation run directly: numpy's generator seeded, the built sequence emulated,
    ``runs`` samples of its final state."""
    import numpy as np
    from pulser_simulation import QutipEmulator

    built = seq.build(**variables) if variables else seq
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampled = QutipEmulator.from_sequence(built).run().sample_final_state(runs)
    return {str(k): int(v) for k, v in sampled.items()}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster() as c:
        c.worker("w1", "--cpus", "2")
        wait_for(lambda: c.ready({"w1"}), timeout=90, what="the worker joins")
        yield c


@pytest.fixture(scope="module")
def gateway_config() -> dict[str, Any]:
    """Overrides of the module's gateway configuration."""
    return {}


@pytest.fixture(scope="module")
def pasqal(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory,
           gateway_config: dict[str, Any]) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("pasqal-gateway")
    gateway = ThreadedGateway(GatewayConfig(
        data_dir=data_dir, port=0, stop_grace_s=2.0, cluster_address=cluster.address,
        cluster_token=TOKEN, **gateway_config))
    try:
        yield Gateway(gateway, data_dir)
    finally:
        gateway.stop()


class Gateway:
    """The module's gateway, its users' tokens and SDKs."""

    def __init__(self, gateway: ThreadedGateway, data_dir: Path) -> None:
        self.gateway = gateway
        self.url = gateway.url
        self.data_dir = data_dir
        self.alice_token = add_user(data_dir, "alice")[1]
        self.bob_token = add_user(data_dir, "bob")[1]

    def sdk(self, token: str | None = None, project: str = PROJECT) -> SDK:
        return make_sdk(self.url, token or self.alice_token, project)


@pytest.fixture
def sdk(pasqal: Gateway) -> SDK:
    return pasqal.sdk()


@pytest.fixture
def bob_sdk(pasqal: Gateway) -> SDK:
    return pasqal.sdk(pasqal.bob_token)


@pytest.fixture(scope="module")
def serialized() -> str:
    """The issue's sequence: two atoms, a variable ``omega_max``."""
    return str(sequence().to_abstract_repr())


SequenceFactory = Callable[..., Any]
