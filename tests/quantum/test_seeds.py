"""The per-experiment seed derivation, verified against qiskit-aer itself (no cluster)."""

from __future__ import annotations

from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit_aer import AerSimulator

from qsrv.quantum._worker import SEED_STRIDE, derive_seed


def circuits() -> list[QuantumCircuit]:
    out = []
    for k in range(3):
        qc = QuantumCircuit(3)
        qc.h(range(3))
        qc.rx(0.3 + k, 1)
        qc.cx(0, 2)
        qc.measure_all()
        out.append(qc)
    return out


def memory(sim: AerSimulator, circs: Any, seed: int, binds: Any = None) -> list[list[str]]:
    result = sim.run(circs, shots=64, seed_simulator=seed, memory=True,
                     parameter_binds=binds).result()
    return [exp.data.memory for exp in result.results]


def test_aer_seeds_experiment_i_with_seed_plus_2113_i() -> None:
    sim = AerSimulator()
    for seed in (0, 12345, 2**63 - 10, -5):
        result = sim.run(circuits(), shots=8, seed_simulator=seed).result()
        assert [exp.seed_simulator for exp in result.results] == [
            derive_seed(seed, i) % 2**64 for i in range(3)]
    assert SEED_STRIDE == 2113


def test_a_split_run_samples_what_one_run_samples() -> None:
    sim = AerSimulator()
    circs = circuits()
    whole = memory(sim, circs, 2**63 - 3000)
    parts = [memory(sim, [c], derive_seed(2**63 - 3000, i))[0] for i, c in enumerate(circs)]
    assert whole == parts
    theta = Parameter("t")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.measure_all()
    values = [0.1, 0.7, 1.3, 2.9]
    sweep = memory(sim, [qc], 77, [{theta: values}])
    tail = memory(sim, [qc], derive_seed(77, 2), [{theta: values[2:]}])
    assert sweep[2:] == tail
    assert len({tuple(m) for m in sweep}) == 4
