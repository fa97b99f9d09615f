"""A live worker advertises what it can simulate; status, backends() and the CLI show it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from qiskit import QuantumCircuit

import qsrv
from qsrv.cli.status import render
from qsrv.quantum import QuantumPlacementError, Sampler, backends, max_qubits


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[None]:
    """One worker told it has a GPU (--gpus 1) on a machine whose Aer has no GPU support."""
    qsrv.shutdown()
    qsrv.init(num_cpus=1, num_gpus=1)
    yield
    qsrv.shutdown()


def test_worker_advertises_capabilities_and_warns_about_unusable_gpus(gpu_cluster: None) -> None:
    listed = backends()
    worker = qsrv.status()["workers"][0]
    quantum = worker["info"]["quantum"]
    assert quantum["devices"] == ["CPU"]
    assert quantum["gpu_ids"] == worker["gpu_ids"] == ["0"]
    assert "Aer cannot use them" in quantum["warnings"][0]
    sv = next(b for b in listed if (b["method"], b["device"], b["precision"])
              == ("statevector", "CPU", "double"))
    assert sv["workers"] == [worker["id"]]
    assert sv["max_qubits"] == max_qubits(quantum["memory_bytes"])
    assert all(b["device"] == "CPU" for b in listed)
    text = render(qsrv.status())
    assert f"statevector {sv['max_qubits']}q" in text
    assert "WARNING" in text and "Aer cannot use them" in text


def test_gpu_work_on_a_gpu_worker_without_gpu_aer_is_refused(gpu_cluster: None) -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.measure_all()
    with pytest.raises(QuantumPlacementError, match="Aer cannot use a GPU"):
        Sampler(options={"backend_options": {"device": "GPU"}}).run([qc])
    assert qsrv.status()["tasks"]["infeasible"] == 0
