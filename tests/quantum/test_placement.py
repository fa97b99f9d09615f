"""Placement by need: targets, and needs no worker can meet reported at once (no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from qsrv.errors import InfeasibleTaskError
from qsrv.quantum import QuantumPlacementError, probe_capabilities
from qsrv.quantum._placement import Need, check_placement, describe_backends, need_of

GiB = 1 << 30


def worker(wid: int, memory: int, gpus: int = 0, gpu_aer: bool = False,
           gpu_memory: int | None = None) -> dict[str, Any]:
    caps = probe_capabilities(memory, [str(i) for i in range(gpus)])
    if gpu_aer:  # what a node with qiskit-aer-gpu reports (not available on this machine)
        caps["devices"] = ["CPU", "GPU"]
        caps["warnings"] = []
        caps["gpu_memory_bytes"] = gpu_memory
        caps["max_qubits"]["GPU"] = {"statevector": {"double": 29, "single": 30}}
    total: dict[str, Any] = {"cpu": 2.0, "memory": f"{memory / GiB:.1f} GiB"}
    if gpus:
        total["gpu"] = float(gpus)
    return {"id": wid, "name": f"w{wid}", "total": total, "gpu_ids": [str(i) for i in range(gpus)],
            "info": {"quantum": caps}}


def test_need_becomes_a_task_target() -> None:
    need = need_of(20, {"method": "statevector", "precision": "single"})
    assert need == Need(20, "statevector", "CPU", "single")
    assert need.target() == {"cpu": 1, "memory": 8 << 20}
    assert need_of(20, {"device": "GPU"}).target() == {"cpu": 1, "gpu": 1}
    with pytest.raises(QuantumPlacementError, match="device"):
        need_of(3, {"device": "TPU"})


def test_a_state_larger_than_every_worker_is_refused_with_the_reason() -> None:
    workers = [worker(1, 16 * GiB), worker(2, 24 * GiB)]
    check_placement([need_of(30, {})], workers)  # 16 GiB: fits worker 2
    with pytest.raises(QuantumPlacementError) as info:
        check_placement([need_of(5, {}), need_of(31, {})], workers)
    assert str(info.value) == ("31 qubits need 32 GiB (automatic, double, CPU); largest worker "
                               "holds 24 GiB (at most 30 qubits)")
    assert isinstance(info.value, InfeasibleTaskError)
    check_placement([need_of(31, {"precision": "single"})], workers)
    with pytest.raises(QuantumPlacementError, match="16 qubits need 64 GiB"):
        check_placement([need_of(16, {"method": "density_matrix"})], workers)


def test_gpu_work_needs_a_worker_whose_aer_can_use_a_gpu() -> None:
    gpu_need = need_of(10, {"device": "GPU"})
    with pytest.raises(QuantumPlacementError, match="has no GPUs"):
        check_placement([gpu_need], [worker(1, 8 * GiB)])
    with pytest.raises(QuantumPlacementError, match="Aer cannot use a GPU"):
        check_placement([gpu_need], [worker(1, 8 * GiB, gpus=1)])
    check_placement([gpu_need], [worker(1, 8 * GiB, gpus=1),
                                 worker(2, 8 * GiB, gpus=1, gpu_aer=True, gpu_memory=8 * GiB)])
    with pytest.raises(QuantumPlacementError, match=r"30 qubits need 16 GiB .*GPU.*holds 8 GiB"):
        check_placement([need_of(30, {"device": "GPU"})],
                        [worker(2, 64 * GiB, gpus=1, gpu_aer=True, gpu_memory=8 * GiB)])
    with pytest.raises(QuantumPlacementError, match="does not run on a GPU"):
        check_placement([need_of(10, {"device": "GPU", "method": "stabilizer"})],
                        [worker(2, 8 * GiB, gpus=1, gpu_aer=True, gpu_memory=8 * GiB)])


def test_no_workers_at_all() -> None:
    with pytest.raises(QuantumPlacementError, match="no worker"):
        check_placement([need_of(2, {})], [])


def test_backends_list_each_simulator_with_its_workers() -> None:
    listed = describe_backends([worker(1, 16 * GiB), worker(2, 24 * GiB, gpus=1),
                                worker(3, 64 * GiB, gpus=1, gpu_aer=True, gpu_memory=8 * GiB)])
    by_key = {(b["method"], b["device"], b["precision"]): b for b in listed}
    sv = by_key[("statevector", "CPU", "double")]
    assert sv["name"] == "aer_simulator_statevector"
    assert sv["workers"] == [1, 2, 3]
    assert sv["max_qubits_by_worker"] == {1: 30, 2: 30, 3: 32}
    assert sv["max_qubits"] == 32
    gpu = by_key[("statevector", "GPU", "double")]
    assert gpu["name"] == "aer_simulator_statevector_gpu" and gpu["workers"] == [3]
    assert all(set(b) >= {"name", "method", "device", "precision", "max_qubits", "workers"}
               for b in listed)


def test_cluster_workers_waits_for_probes_once_per_silent_worker() -> None:
    from qsrv.quantum._placement import cluster_workers

    probing = worker(7, 8 * GiB)
    pending = {**probing, "info": {}}
    answers = iter([{"workers": [pending]}] * 3 + [{"workers": [probing]}])
    assert cluster_workers(lambda: next(answers), probe_timeout=5)[0]["info"] == probing["info"]
    silent = {**worker(8, 8 * GiB), "info": {"host": "old"}, "name": "silent-8"}
    asked = 0

    def status() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"workers": [silent]}

    assert cluster_workers(status, probe_timeout=0.3) == [silent]
    assert asked > 1  # asked again while waiting for its probe
    asked = 0
    assert cluster_workers(status, probe_timeout=60) == [silent]
    assert asked == 1  # not waited for a second time
    check_placement([need_of(20, {})], [silent])  # counted with its memory, on the CPU
