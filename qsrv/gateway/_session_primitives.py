"""qiskit primitives (V2) running on a gateway session: ``Session.sampler()`` and
``Session.estimator()``.

Each ``run`` becomes one batch on the session: a job per parameter binding of each PUB (split
into calls of at most ``max_shots_per_call`` shots), run in order on the session's reservation.
The sampler returns the measured bits per classical register (``BitArray``, rebuilt from the
counts: shot order is not kept). The estimator measures each Pauli term of the observables in
its basis and estimates the expectation values from the counts, with ``ceil(1/precision²)``
shots per term.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from qiskit import QuantumCircuit  # type: ignore[import-untyped]
from qiskit.primitives import PrimitiveJob  # type: ignore[import-untyped]
from qiskit.primitives.base import BaseEstimatorV2, BaseSamplerV2  # type: ignore[import-untyped]
from qiskit.primitives.containers import (  # type: ignore[import-untyped]
    BitArray,
    DataBin,
    PrimitiveResult,
    PubResult,
    SamplerPubResult,
)
from qiskit.primitives.containers.estimator_pub import EstimatorPub  # type: ignore[import-untyped]
from qiskit.primitives.containers.sampler_pub import SamplerPub  # type: ignore[import-untyped]

from qsrv.errors import GatewayError
from qsrv.gateway._quantum._models import QStatus

if TYPE_CHECKING:
    from qsrv.gateway._quantum_client import QuantumJob, Session

__all__ = ["SessionEstimator", "SessionSampler"]


def _bindings(circuit: QuantumCircuit, values: Any,
              shape: tuple[int, ...]) -> list[dict[str, float]]:
    """One ``{parameter name: value}`` per index of ``shape`` (row-major)."""
    params = list(circuit.parameters)
    array = np.broadcast_to(values.as_array(params), (*shape, len(params)))
    flat = array.reshape(-1, len(params)) if shape else array.reshape(1, len(params))
    return [{p.name: float(v) for p, v in zip(params, row, strict=True)} for row in flat]


def _run_jobs(session: Session, program: Any,
              jobs: list[dict[str, Any]]) -> list[QuantumJob]:
    """Run ``jobs`` as one batch on the session; their ended jobs, in order."""
    batch = session._client.create_batch(program, jobs, session=session, wait=True)
    failed = [j for j in batch.ordered_jobs if j.status is not QStatus.DONE]
    if failed:
        job = failed[0]
        raise GatewayError(f"quantum job {job.id} ended {job.status}: "
                           f"{'; '.join(job.errors) or 'no error recorded'}")
    return batch.ordered_jobs


def _split(shots: int, cap: int | None) -> list[int]:
    if not cap or shots <= cap:
        return [shots]
    return [cap] * (shots // cap) + ([shots % cap] if shots % cap else [])


class SessionSampler(BaseSamplerV2):  # type: ignore[misc]
    """A ``BaseSamplerV2`` whose PUBs run on a gateway session."""

    def __init__(self, session: Session, *, default_shots: int | None = None,
                 max_shots_per_call: int | None = None) -> None:
        self._session = session
        self._default_shots = default_shots or 1024
        self._max_shots = max_shots_per_call

    @property
    def session(self) -> Session:
        return self._session

    def run(self, pubs: Iterable[Any], *, shots: int | None = None) -> PrimitiveJob:
        coerced = [SamplerPub.coerce(pub, shots or self._default_shots) for pub in pubs]
        job = PrimitiveJob(self._run, coerced)
        job._submit()
        return job

    def _run(self, pubs: list[SamplerPub]) -> PrimitiveResult:
        return PrimitiveResult([self._run_pub(pub) for pub in pubs], metadata={"version": 2})

    def _run_pub(self, pub: SamplerPub) -> SamplerPubResult:
        circuit, shape = pub.circuit, tuple(pub.shape)
        bindings = _bindings(circuit, pub.parameter_values, shape)
        calls = _split(pub.shots, self._max_shots)
        specs = [{"shots": n, "variables": b} for b in bindings for n in calls]
        done = _run_jobs(self._session, circuit, specs)
        per_binding: list[dict[str, int]] = []
        for i in range(len(bindings)):
            merged: dict[str, int] = {}
            for job in done[i * len(calls):(i + 1) * len(calls)]:
                for key, n in (job.result or {}).items():
                    merged[key] = merged.get(key, 0) + n
            per_binding.append(merged)
        data: dict[str, BitArray] = {}
        cregs = list(circuit.cregs)
        for index, creg in enumerate(cregs):
            arrays = []
            for counts in per_binding:
                mine: dict[str, int] = {}
                for key, n in counts.items():
                    parts = key.split(" ")[::-1]
                    bits = parts[index] if len(parts) == len(cregs) else key
                    mine[bits] = mine.get(bits, 0) + n
                arrays.append(BitArray.from_counts(mine, num_bits=creg.size).array)
            stacked = np.stack(arrays).reshape(*shape, *arrays[0].shape)
            data[creg.name] = BitArray(stacked, creg.size)
        return SamplerPubResult(DataBin(**data, shape=shape),
                                metadata={"shots": pub.shots,
                                          "circuit_metadata": circuit.metadata})


def _basis_circuit(circuit: QuantumCircuit, label: str) -> QuantumCircuit:
    """``circuit`` without its final measurements, rotated into ``label``'s basis, measured."""
    out = circuit.remove_final_measurements(inplace=False)
    for qubit, pauli in enumerate(reversed(label)):
        if pauli == "X":
            out.h(qubit)
        elif pauli == "Y":
            out.sdg(qubit)
            out.h(qubit)
    out.measure_all()
    return out


def _expectation(counts: dict[str, int], label: str) -> float:
    support = [q for q, p in enumerate(reversed(label)) if p != "I"]
    total = sum(counts.values())
    value = 0
    for key, n in counts.items():
        bits = key.replace(" ", "")
        parity = sum(bits[-1 - q] == "1" for q in support) % 2
        value += -n if parity else n
    return value / total if total else 0.0


class SessionEstimator(BaseEstimatorV2):  # type: ignore[misc]
    """A ``BaseEstimatorV2`` whose PUBs run on a gateway session."""

    def __init__(self, session: Session, *, default_precision: float = 0.015625) -> None:
        self._session = session
        self._default_precision = default_precision

    @property
    def session(self) -> Session:
        return self._session

    def run(self, pubs: Iterable[Any], *, precision: float | None = None) -> PrimitiveJob:
        coerced = [EstimatorPub.coerce(pub, precision or self._default_precision)
                   for pub in pubs]
        job = PrimitiveJob(self._run, coerced)
        job._submit()
        return job

    def _run(self, pubs: list[EstimatorPub]) -> PrimitiveResult:
        return PrimitiveResult([self._run_pub(pub) for pub in pubs], metadata={"version": 2})

    def _run_pub(self, pub: EstimatorPub) -> PubResult:
        circuit, shape = pub.circuit, tuple(pub.shape)
        shots = max(1, math.ceil(1.0 / pub.precision ** 2))
        bindings = _bindings(circuit, pub.parameter_values, shape)
        raw = pub.observables
        observables = np.empty(raw.shape, dtype=object)
        for index in np.ndindex(raw.shape):
            observables[index] = raw[index]
        flat_obs = list(np.broadcast_to(observables, shape).reshape(-1))
        labels = sorted({label for obs in flat_obs for label in obs if set(label) - {"I"}})
        specs = [{"shots": shots, "variables": b, "program": _basis_circuit(circuit, label)}
                 for b in bindings for label in labels]
        measured: dict[tuple[int, str], float] = {}
        if specs:
            done = _run_jobs(self._session, specs[0]["program"], specs)
            for i in range(len(bindings)):
                for k, label in enumerate(labels):
                    job = done[i * len(labels) + k]
                    measured[(i, label)] = _expectation(job.result or {}, label)
        evs = np.zeros(len(flat_obs))
        stds = np.zeros(len(flat_obs))
        for i, obs in enumerate(flat_obs):
            variance = 0.0
            for label, coeff in obs.items():
                if not set(label) - {"I"}:
                    evs[i] += float(np.real(coeff))
                    continue
                value = measured[(i, label)]
                evs[i] += float(np.real(coeff)) * value
                variance += abs(coeff) ** 2 * max(0.0, 1 - value ** 2) / shots
            stds[i] = math.sqrt(variance)
        return PubResult(DataBin(evs=evs.reshape(shape), stds=stds.reshape(shape), shape=shape),
                         metadata={"target_precision": pub.precision, "shots": shots,
                                   "circuit_metadata": circuit.metadata})
