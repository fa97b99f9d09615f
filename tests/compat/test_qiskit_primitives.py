"""qiskit's V1 primitives from ``qsrv.compat.qiskit_primitives``: the call shapes and results
of qiskit's reference ``Sampler`` and ``Estimator`` (qiskit < 2), computed by Aer on the
cluster — from the driver through qsrv.quantum, inside a task in the task's process, with the
same results either way."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.circuit.random import random_circuit
from qiskit.primitives import BaseEstimatorV1, BaseSamplerV1, EstimatorResult, SamplerResult
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit.result import QuasiDistribution

import qsrv
from qsrv.compat.qiskit_primitives import Estimator, Sampler
from qsrv.errors import ConfigError

pytestmark = pytest.mark.usefixtures("local_cluster")


BELL = pytest.approx({0: 0.5, 3: 0.5}, abs=1e-12)


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def measured(circuit: QuantumCircuit) -> QuantumCircuit:
    circuit = circuit.copy()
    circuit.measure_all()
    return circuit


def exact(circuit: QuantumCircuit) -> dict[int, float]:
    state = Statevector(circuit.remove_final_measurements(inplace=False))
    return {int(bits, 2): p for bits, p in state.probabilities_dict().items()}


@qsrv.distribute_task()
def sample_in_a_task(circuits: list[Any], values: Any, options: dict[str, Any]) -> Any:
    return Sampler().run(circuits, values, **options).result()


@qsrv.distribute_task()
def estimate_in_a_task(circuits: list[Any], observables: list[Any], values: Any,
                       options: dict[str, Any]) -> Any:
    return Estimator().run(circuits, observables, values, **options).result()


def test_sampler_exact_by_default() -> None:
    sampler = Sampler()
    assert isinstance(sampler, BaseSamplerV1)
    job = sampler.run(bell())  # one circuit, no shots: exact probabilities
    result = job.result()
    assert isinstance(result, SamplerResult)
    assert len(result.quasi_dists) == 1
    assert result.quasi_dists[0] == BELL
    assert isinstance(result.quasi_dists[0], QuasiDistribution)
    assert result.quasi_dists[0].shots is None
    assert result.metadata == [{}]
    assert job.status() == JobStatus.DONE

    circuits = [measured(random_circuit(3, 3, seed=seed)) for seed in range(5)]
    quasi_dists = sampler.run(circuits).result().quasi_dists
    for circuit, quasi in zip(circuits, quasi_dists, strict=True):
        assert set(quasi) == set(exact(circuit))
        assert quasi == pytest.approx(exact(circuit), abs=1e-12)


def test_sampler_outcomes_follow_classical_bits_across_registers() -> None:
    q = QuantumRegister(3)
    a, b = ClassicalRegister(1, "a"), ClassicalRegister(2, "b")
    circuit = QuantumCircuit(q, a, b)  # clbits in order: a[0], b[0], b[1]
    circuit.x(0)
    circuit.x(2)
    circuit.measure(0, b[1])  # 1 -> bit 2
    circuit.measure(1, a[0])  # 0 -> bit 0
    circuit.measure(2, b[0])  # 1 -> bit 1
    assert Sampler().run(circuit).result().quasi_dists == [{0b110: 1.0}]
    assert Sampler().run(circuit, shots=50).result().quasi_dists == [{0b110: 1.0}]


def test_sampler_with_shots_parameters_and_seed() -> None:
    theta = Parameter("theta")
    circuit = QuantumCircuit(1)
    circuit.ry(theta, 0)
    circuit.measure_all()
    sampler = Sampler(options={"shots": 2000, "seed": 11})
    result = sampler.run([circuit, circuit, bell()], [[0.0], [np.pi / 2], []]).result()
    assert result.metadata == [{"shots": 2000}] * 3
    zero, half, pair = result.quasi_dists
    assert zero == {0: 1.0} and zero.shots == 2000
    assert set(half) == {0, 1} and half[0] == pytest.approx(0.5, abs=0.06)
    assert set(pair) == {0, 3} and sum(pair.values()) == pytest.approx(1.0)
    assert all(n * 2000 == int(n * 2000) for n in half.values())  # counts / shots
    # the same seed samples the same; run options override the constructor's
    again = sampler.run([circuit, circuit, bell()], [[0.0], [np.pi / 2], []]).result()
    assert again.quasi_dists == result.quasi_dists
    assert sampler.run(bell(), shots=10).result().metadata == [{"shots": 10}]
    sampler.set_options(shots=None)
    assert sampler.run(bell()).result().quasi_dists[0] == BELL


def test_sampler_inside_a_task_gives_what_the_driver_gets() -> None:
    circuits = [measured(random_circuit(3, 3, seed=seed)) for seed in range(3)]
    for options in ({"shots": 500, "seed": 5}, {}):
        driver = Sampler().run(circuits, **options).result()
        in_task = qsrv.get(sample_in_a_task(circuits, None, options))
        assert in_task.metadata == driver.metadata
        for here, there in zip(in_task.quasi_dists, driver.quasi_dists, strict=True):
            assert here == pytest.approx(there, abs=1e-12)
            assert set(here) == set(there)


def test_estimator_exact_and_with_shots() -> None:
    estimator = Estimator()
    assert isinstance(estimator, BaseEstimatorV1)
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    result = estimator.run(circuit, SparsePauliOp("ZZ")).result()  # one circuit, one observable
    assert isinstance(result, EstimatorResult)
    assert isinstance(result.values, np.ndarray)
    assert result.values.tolist() == [pytest.approx(1.0)]
    assert result.metadata == [{}]

    theta = Parameter("theta")
    rotated = QuantumCircuit(1)
    rotated.ry(theta, 0)
    values = estimator.run([rotated, rotated, circuit], ["Z", "X", "XX"],
                           [[0.3], [0.3], []]).result().values
    assert values == pytest.approx([np.cos(0.3), np.sin(0.3), 1.0])

    observable = SparsePauliOp(["ZZ", "XX"], coeffs=[1.0, 0.5])
    circuits = [random_circuit(2, 3, seed=seed) for seed in range(4)]
    exact_values = [Statevector(c).expectation_value(observable).real for c in circuits]
    noisy = estimator.run(circuits, [observable] * 4, shots=4000, seed=3).result()
    assert noisy.values == pytest.approx(exact_values, abs=0.1)
    for c, metadata in zip(circuits, noisy.metadata, strict=True):
        state = Statevector(c)
        variance = (state.expectation_value(observable @ observable)
                    - state.expectation_value(observable) ** 2).real
        assert metadata == {"variance": pytest.approx(variance, abs=1e-9), "shots": 4000}
    again = estimator.run(circuits, [observable] * 4, shots=4000, seed=3).result()
    assert again.values.tolist() == noisy.values.tolist()

    in_task = qsrv.get(estimate_in_a_task(circuits, [observable] * 4, None,
                                          {"shots": 4000, "seed": 3}))
    assert in_task.values == pytest.approx(noisy.values.tolist(), abs=1e-12)
    exact_in_task = qsrv.get(estimate_in_a_task(circuits, [observable] * 4, None, {}))
    assert exact_in_task.values == pytest.approx(exact_values, abs=1e-12)


def test_jobs_are_awaitable_from_the_driver() -> None:
    async def main() -> Any:
        return await Sampler().run(bell())

    assert asyncio.run(main()).quasi_dists[0] == BELL


def test_what_is_refused_says_why() -> None:
    with pytest.raises(ConfigError, match="run options shots, seed; not approximation"):
        Sampler().run(bell(), approximation=True)
    with pytest.raises(ConfigError, match="backend_options"):
        Estimator().run(QuantumCircuit(1), "Z", method="statevector")
    with pytest.raises(ConfigError, match="shots must be"):
        Sampler().run(bell(), shots=0)
    mid = QuantumCircuit(1, 2)
    mid.h(0)
    mid.measure(0, 0)
    mid.h(0)
    mid.measure(0, 1)
    with pytest.raises(ConfigError, match="final measurement"):
        Sampler().run(mid)
    assert sum(Sampler().run(mid, shots=100).result().quasi_dists[0].values()) == \
        pytest.approx(1.0)
    with pytest.raises(ValueError, match="classical bit"):  # as qiskit's V1 checks
        Sampler().run(QuantumCircuit(1))
