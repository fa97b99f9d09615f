"""Sampler and Estimator: qiskit's V2 interfaces, split over the cluster, equal to qiskit-aer."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit.library import C3SXGate, real_amplitudes
from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2, PrimitiveResult
from qiskit.primitives.base.base_primitive_job import BasePrimitiveJob
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer.primitives import EstimatorV2 as AerEstimator
from qiskit_aer.primitives import SamplerV2 as AerSampler

import qsrv
from qsrv.quantum import Estimator, QuantumPlacementError, Sampler

pytestmark = pytest.mark.usefixtures("local_cluster")

RNG = np.random.default_rng(1234)


def ansatz(measure: bool = True) -> QuantumCircuit:
    qc = real_amplitudes(3, reps=1)
    if measure:
        qc.measure_all()
    return qc


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def two_registers() -> QuantumCircuit:
    q = QuantumRegister(3)
    a, b = ClassicalRegister(1, "alpha"), ClassicalRegister(2, "beta")
    qc = QuantumCircuit(q, a, b)
    qc.h(q)
    qc.cx(q[0], q[2])
    qc.measure(q[0], a[0])
    qc.measure(q[1:], b)
    return qc


def assert_same_samples(ours: Any, theirs: Any) -> None:
    assert len(ours) == len(theirs)
    for mine, ref in zip(ours, theirs, strict=True):
        assert set(mine.data) == set(ref.data)
        assert mine.data.shape == ref.data.shape
        for name in ref.data:
            assert np.array_equal(getattr(mine.data, name).array, getattr(ref.data, name).array)
            assert getattr(mine.data, name).num_bits == getattr(ref.data, name).num_bits
        assert mine.metadata["shots"] == ref.metadata["shots"]
        assert set(mine.metadata) == set(ref.metadata)


def test_interfaces() -> None:
    assert isinstance(Sampler(), BaseSamplerV2)
    assert isinstance(Estimator(), BaseEstimatorV2)
    sampler = Sampler(default_shots=7, seed=3,
                      options={"backend_options": {"method": "statevector"}})
    assert sampler.default_shots == 7 and sampler.seed == 3
    assert sampler.options.backend_options == {"method": "statevector"}
    assert Estimator(options={"default_precision": 0.1}).options.default_precision == 0.1
    with pytest.raises(TypeError):
        Sampler(options={"not_an_option": 1})
    with pytest.raises(qsrv.ConfigError, match="experiments_per_task"):
        Sampler(options={"experiments_per_task": 0})


@pytest.mark.parametrize("per_task", [None, 1, 4])
def test_sampler_matches_aer_bit_for_bit(per_task: int | None) -> None:
    values = RNG.uniform(0, np.pi, (2, 3, 6))
    pubs: list[Any] = [
        bell(),                              # a bare circuit
        (ansatz(), values),                  # a (2, 3) sweep
        (two_registers(),),                  # a 1-tuple, two classical registers
        (ansatz(), values[0], 333),          # per-PUB shots: its own group
        (ansatz(), values[1, 0]),            # one binding, shape ()
    ]
    ref = AerSampler(default_shots=200, seed=42).run(pubs).result()
    job = Sampler(default_shots=200, seed=42,
                  options={"experiments_per_task": per_task}).run(pubs)
    assert isinstance(job, BasePrimitiveJob)
    ours = job.result()
    assert isinstance(ours, PrimitiveResult)
    assert ours.metadata == {"version": 2}
    assert_same_samples(ours, ref)
    assert ours[1].data.meas.array.shape == (2, 3, 200, 1)
    assert ours[3].metadata["shots"] == 333
    assert job.status() == JobStatus.DONE and job.done() and job.in_final_state()
    if per_task == 1:
        assert len(job.refs) == 1 + 6 + 1 + 3 + 1


def test_sampler_run_shots_and_seed_from_run_options() -> None:
    pubs = [bell(), (ansatz(), RNG.uniform(0, 1, (4, 6)))]
    ref = AerSampler(options={"run_options": {"seed_simulator": 9}}).run(pubs, shots=50).result()
    ours = Sampler(options={"run_options": {"seed_simulator": 9},
                            "experiments_per_task": 2}).run(pubs, shots=50).result()
    assert_same_samples(ours, ref)
    other = Sampler(options={"run_options": {"seed_simulator": 10}}).run(pubs, shots=50).result()
    assert not np.array_equal(other[1].data.meas.array, ours[1].data.meas.array)


def test_sampler_circuit_without_measurements_warns_and_is_empty() -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    with pytest.warns(UserWarning, match="no output classical registers"):
        result = Sampler(seed=1).run([qc]).result()
    assert len(result[0].data) == 0


def test_sampler_transpiles_what_aer_cannot_run_directly() -> None:
    qc = QuantumCircuit(4)
    qc.h(range(3))
    qc.append(C3SXGate(), range(4))  # not an Aer instruction: needs transpiling
    qc.measure_all()
    counts = Sampler(seed=5).run([qc], shots=400).result()[0].data.meas.get_counts()
    assert sum(counts.values()) == 400
    # 3 random bits; sqrt(X) on the fourth only when all three are 1
    assert set(counts) == {f"0{b:03b}" for b in range(8)} | {"1111"}


def test_estimator_matches_aer_broadcasting_and_precision() -> None:
    circuit = ansatz(measure=False)
    zz = SparsePauliOp.from_list([("ZZI", 1.0), ("XIX", 0.5)])
    values = RNG.uniform(0, np.pi, (2, 3, 6))
    pubs: list[Any] = [
        (circuit, [[zz], [SparsePauliOp("ZII")]], values),  # (2,1) x (2,3) -> (2,3)
        (circuit, zz, values[0], 0.05),                      # per-PUB precision: noisy
        (circuit, [zz, "IIZ", {"XXX": 2.0}], values[0, 0]),  # 3 observables, one binding
    ]
    options = {"run_options": {"seed_simulator": 11}}
    ref = AerEstimator(options=options).run(pubs).result()
    for per in (1, 2, None):
        ours = Estimator(options={**options, "experiments_per_task": per}).run(pubs).result()
        for mine, theirs in zip(ours, ref, strict=True):
            assert np.array_equal(mine.data.evs, theirs.data.evs)
            assert np.array_equal(mine.data.stds, theirs.data.stds)
            assert mine.metadata["target_precision"] == theirs.metadata["target_precision"]
            assert set(mine.metadata) == set(theirs.metadata)
    assert ours[0].data.evs.shape == (2, 3) and ours[2].data.evs.shape == (3,)
    assert ours[1].metadata["target_precision"] == 0.05


def test_estimator_run_precision_default_and_negative() -> None:
    pub = (ansatz(measure=False), "ZZZ", RNG.uniform(0, 1, 6))
    opts = {"default_precision": 0.01, "run_options": {"seed_simulator": 2}}
    assert np.array_equal(Estimator(options=opts).run([pub]).result()[0].data.evs,
                          AerEstimator(options=opts).run([pub]).result()[0].data.evs)
    ref = AerEstimator(options=opts).run([pub], precision=0.2).result()[0].data.evs
    assert np.array_equal(Estimator(options=opts).run([pub], precision=0.2).result()[0].data.evs,
                          ref)
    with pytest.raises(ValueError, match="precision"):
        Estimator().run([pub], precision=-1.0)


def test_await_a_job_and_result_async() -> None:
    ref = AerSampler(seed=3).run([bell()]).result()

    async def main() -> tuple[Any, Any]:
        first = await Sampler(seed=3).run([bell()])
        second = await Estimator().run([(ansatz(False), "ZII", np.zeros(6))]).result_async()
        return first, second

    sampled, estimated = asyncio.run(main())
    assert_same_samples(sampled, ref)
    assert estimated[0].data.evs == pytest.approx(1.0)


def test_placement_refuses_at_once_what_fits_no_worker() -> None:
    big = QuantumCircuit(40)
    big.h(0)
    big.measure_all()
    with pytest.raises(QuantumPlacementError, match=r"40 qubits need 16 TiB .*largest worker "
                                                    r"holds .* GiB \(at most \d+ qubits\)"):
        Sampler().run([big])
    with pytest.raises(QuantumPlacementError, match="no GPUs"):
        Sampler(options={"backend_options": {"device": "GPU"}}).run([bell()])
    with pytest.raises(QuantumPlacementError, match="40 qubits need"):
        Estimator().run([(big.remove_final_measurements(inplace=False), "Z" * 40)])
    assert qsrv.status()["tasks"]["infeasible"] == 0  # nothing was submitted


def test_stabilizer_method_places_large_clifford_circuits() -> None:
    qc = QuantumCircuit(60)
    qc.h(0)
    for i in range(59):
        qc.cx(i, i + 1)
    qc.measure_all()
    opts = {"backend_options": {"method": "stabilizer"}}
    counts = Sampler(seed=1, options=opts).run([qc], shots=100).result()[0].data.meas.get_counts()
    assert set(counts) == {"0" * 60, "1" * 60}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = AerSampler(seed=1, options=opts).run([qc], shots=100).result()
    assert ref[0].data.meas.get_counts() == counts
