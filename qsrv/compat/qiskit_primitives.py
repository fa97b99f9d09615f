"""qiskit's V1 primitives, which qiskit 2 removed, on Aer over the cluster: change only the
import line.

    from qsrv.compat.qiskit_primitives import Sampler, Estimator   # was: from qiskit.primitives

    Sampler().run(circuit).result().quasi_dists[0]        # {outcome: probability}
    Sampler().run(circuits, parameter_values, shots=1000).result().metadata   # [{"shots": 1000}]
    Estimator().run(circuits, observables, parameter_values).result().values  # numpy array

``Sampler`` and ``Estimator`` are qiskit's ``BaseSamplerV1`` and ``BaseEstimatorV1`` (still in
qiskit 2, which checks the arguments), with the interface and the defaults of the reference
primitives that ``qiskit.primitives`` had before qiskit 2: ``run(circuits, [observables,]
parameter_values=None, **run_options)`` with one circuit or a sequence, the options ``shots``
(default None: exact results) and ``seed`` (an int or a numpy Generator; in the constructor as
``options={...}``, with ``set_options`` or per ``run``), and a job whose ``result()`` is a
``SamplerResult`` (``quasi_dists``: one ``QuasiDistribution`` per circuit, keyed by the outcome
as an int, classical bit *i* being bit *i*; ``metadata``) or an ``EstimatorResult``
(``values``: a numpy array; ``metadata``). The job is a `qsrv.quantum.QuantumJob`: also
``status()``, ``cancel()`` and ``await job``.

How the results are produced, on the cluster's workers, with qiskit-aer:

- ``Sampler`` with ``shots``: `qsrv.quantum.Sampler` (Aer's SamplerV2, split into tasks)
  samples every circuit ``shots`` times; the quasi-distribution is counts / shots, its metadata
  ``{"shots": shots}``.
- ``Sampler`` without ``shots``: each circuit's final state is computed by Aer in a task
  (`qsrv.quantum.statevector`, placed where the state fits; final measurements removed), and
  the exact probabilities of the measured qubits (rounded to 16 decimals, zeros left out, as
  the reference did) in a task next to it; metadata ``{}``. Every measurement must then be
  final (ConfigError otherwise: give ``shots``).
- ``Estimator``: `qsrv.quantum.Estimator` (Aer's EstimatorV2 at precision 0: exact expectation
  values); metadata ``{}``. With ``shots``, as the reference did, each value gets normal noise
  of variance ``variance / shots``, where ``variance = <O^2> - <O>^2`` is also computed by Aer;
  metadata ``{"variance": ..., "shots": shots}``. Values are real (the reference returned
  complex ones for non-Hermitian observables).

``backend_options`` (constructor) go to every task's AerSimulator, e.g. ``{"device": "GPU"}``
or ``{"method": "matrix_product_state"}``. Other run options are refused with ConfigError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qiskit.primitives import (  # type: ignore[import-untyped]
    BaseEstimatorV1,
    BaseSamplerV1,
    EstimatorResult,
    SamplerResult,
)
from qiskit.result import QuasiDistribution  # type: ignore[import-untyped]

import qsrv
from qsrv.client import ObjectRef
from qsrv.errors import ConfigError
from qsrv.quantum import Estimator as _EstimatorV2
from qsrv.quantum import QuantumJob, statevector
from qsrv.quantum import Sampler as _SamplerV2

__all__ = ["Estimator", "Sampler"]

_RUN_OPTIONS = ("shots", "seed")
_DECIMALS = 16  # the reference sampler's rounding of exact probabilities


def _checked_options(kind: str, run_options: dict[str, Any]) -> tuple[int | None, Any]:
    unknown = sorted(set(run_options) - set(_RUN_OPTIONS))
    if unknown:
        raise ConfigError(f"the V1 {kind} takes the run options {', '.join(_RUN_OPTIONS)}; "
                          f"not {', '.join(unknown)} (AerSimulator options go to "
                          f"{kind}(backend_options={{...}}))")
    shots = run_options.get("shots")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int | np.integer)
                              or shots < 1):
        raise ConfigError(f"shots must be a positive int or None, got {shots!r}")
    return (None if shots is None else int(shots)), run_options.get("seed")


def _seed_int(seed: Any) -> int | None:
    """An int seed for Aer from an int, a numpy Generator or None."""
    if seed is None:
        return None
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(1 << 62))
    return int(seed)


def _pub(circuit: Any, values: Sequence[float], *middle: Any) -> tuple[Any, ...]:
    """A V2 PUB of the circuit, what goes between (observables), and its parameter values."""
    if circuit.num_parameters:
        return (circuit, *middle, list(values))
    return (circuit, *middle)


class Sampler(BaseSamplerV1):  # type: ignore[misc]
    """The V1 ``Sampler`` of ``qiskit.primitives`` (qiskit < 2), on Aer over the cluster.

    ``Sampler(options={"shots": ..., "seed": ...}, backend_options={...})``; ``run(circuits,
    parameter_values=None, shots=None, seed=None)`` returns a job whose ``result()`` is a
    ``SamplerResult``. Without shots the quasi-distributions are the exact probabilities.
    """

    def __init__(self, *, options: dict[str, Any] | None = None,
                 backend_options: dict[str, Any] | None = None) -> None:
        super().__init__(options=options)
        self._backend_options = dict(backend_options or {})

    def _run(self, circuits: tuple[Any, ...], parameter_values: tuple[tuple[float, ...], ...],
             **run_options: Any) -> QuantumJob[Any]:
        shots, seed = _checked_options("Sampler", run_options)
        if shots is None:
            return self._exact(circuits, parameter_values)
        sampler = _SamplerV2(default_shots=shots, seed=_seed_int(seed),
                             options={"backend_options": self._backend_options})
        job = sampler.run([_pub(c, v) for c, v in zip(circuits, parameter_values, strict=True)])

        def assemble(_: list[Any]) -> Any:
            pub_results = job.result()
            return SamplerResult(
                [QuasiDistribution({k: n / shots for k, n in _counts(c, r.data).items()},
                                   shots=shots)
                 for c, r in zip(circuits, pub_results, strict=True)],
                [{"shots": shots} for _ in circuits])

        return QuantumJob(job.refs, assemble)

    def _exact(self, circuits: tuple[Any, ...],
               parameter_values: tuple[tuple[float, ...], ...]) -> QuantumJob[Any]:
        refs: list[ObjectRef] = []
        for i, (circuit, values) in enumerate(zip(circuits, parameter_values, strict=True)):
            qargs = _final_measured_qubits(circuit, i)
            binds = dict(zip(circuit.parameters, values, strict=True))
            state = statevector(circuit, parameter_values=binds,
                                backend_options=self._backend_options)
            refs.append(_probabilities_task(state, qargs))

        def assemble(probabilities: list[dict[int, float]]) -> Any:
            return SamplerResult([QuasiDistribution(p) for p in probabilities],
                                 [{} for _ in probabilities])

        return QuantumJob(refs, assemble)


class Estimator(BaseEstimatorV1):  # type: ignore[misc]
    """The V1 ``Estimator`` of ``qiskit.primitives`` (qiskit < 2), on Aer over the cluster.

    ``Estimator(options={"shots": ..., "seed": ...}, backend_options={...})``; ``run(circuits,
    observables, parameter_values=None, shots=None, seed=None)`` returns a job whose
    ``result()`` is an ``EstimatorResult``. Without shots the values are exact.
    """

    def __init__(self, *, options: dict[str, Any] | None = None,
                 backend_options: dict[str, Any] | None = None) -> None:
        super().__init__(options=options)
        self._backend_options = dict(backend_options or {})

    def _run(self, circuits: tuple[Any, ...], observables: tuple[Any, ...],
             parameter_values: tuple[tuple[float, ...], ...],
             **run_options: Any) -> QuantumJob[Any]:
        shots, seed = _checked_options("Estimator", run_options)
        estimator = _EstimatorV2(options={"backend_options": self._backend_options})
        triples = list(zip(circuits, observables, parameter_values, strict=True))
        if shots is None:
            pubs = [_pub(c, v, o) for c, o, v in triples]
        else:  # <O> and <O^2>, for the variance
            pubs = [_pub(c, v, [o, (o @ o).simplify(atol=0)]) for c, o, v in triples]
        job = estimator.run(pubs)

        def assemble(_: list[Any]) -> Any:
            evs = [np.asarray(r.data.evs, dtype=float) for r in job.result()]
            if shots is None:
                return EstimatorResult(np.array([float(e) for e in evs]), [{} for _ in evs])
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
            values, metadata = [], []
            for mean, square in evs:
                variance = max(float(square - mean ** 2), 0.0)
                values.append(rng.normal(mean, np.sqrt(variance / shots)))
                metadata.append({"variance": variance, "shots": shots})
            return EstimatorResult(np.array(values, dtype=float), metadata)

        return QuantumJob(job.refs, assemble)


# -- helpers --------------------------------------------------------------------------------


def _counts(circuit: Any, data: Any) -> dict[int, int]:
    """{outcome: count} over all classical bits of `circuit` (bit i of the outcome is clbit i)
    from a V2 result's per-register bit arrays."""
    outcomes: np.ndarray | None = None
    wide = circuit.num_clbits > 62
    for register in circuit.cregs:
        bits = getattr(data, register.name).to_bool_array(order="little")  # (shots, size)
        weights = [1 << circuit.find_bit(bit).index for bit in register]
        column = bits.astype(object if wide else np.int64) @ np.array(
            weights, dtype=object if wide else np.int64)
        outcomes = column if outcomes is None else outcomes | column
    if outcomes is None:
        return {}
    values, counts = np.unique(outcomes, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts, strict=True)}


def _final_measured_qubits(circuit: Any, index: int) -> list[int]:
    """The qubit measured into each classical bit (in clbit order) by the circuit's final
    measurements, as the reference sampler found them; ConfigError when a classical bit is
    not written by a final measurement, or when other measurements or resets remain."""
    active_qubits = set(range(circuit.num_qubits))
    active_clbits = set(range(circuit.num_clbits))
    measured: dict[int, int] = {}  # clbit -> qubit
    final = set()
    for position in range(len(circuit.data) - 1, -1, -1):
        if not active_qubits or not active_clbits:
            break
        instruction = circuit.data[position]
        name = instruction.operation.name
        if name == "measure":
            qubit = circuit.find_bit(instruction.qubits[0]).index
            clbit = circuit.find_bit(instruction.clbits[0]).index
            if qubit in active_qubits and clbit in active_clbits:
                measured[clbit] = qubit
                final.add(position)
                active_qubits.discard(qubit)
                active_clbits.discard(clbit)
        elif name not in ("barrier", "delay"):
            for qubit in instruction.qubits:
                active_qubits.discard(circuit.find_bit(qubit).index)
    if set(measured) != set(range(circuit.num_clbits)):
        raise ConfigError(
            f"circuit {index}: without shots the Sampler gives exact probabilities, so every "
            f"classical bit must be written by a final measurement ({circuit.num_clbits} bits, "
            f"{len(measured)} finally measured); pass shots=... to sample it instead")
    for position, instruction in enumerate(circuit.data):
        operation = instruction.operation
        if position not in final and (operation.name in ("measure", "reset")
                                      or getattr(operation, "blocks", None)):
            raise ConfigError(
                f"circuit {index}: without shots the Sampler gives exact probabilities of the "
                f"final state, which a {operation.name!r} before the end makes random; pass "
                "shots=... to sample it instead")
    return [measured[clbit] for clbit in range(circuit.num_clbits)]


def _probabilities(state: Any, qargs: list[int]) -> dict[int, float]:
    """{outcome: probability} of measuring `qargs` (qargs[i] gives bit i) in `state` (an
    array; a ref of one when submitted as a task), zeros left out."""
    from qiskit.quantum_info import Statevector  # type: ignore[import-untyped]

    probabilities = Statevector(np.asarray(state, dtype=np.complex128)).probabilities(
        qargs=qargs, decimals=_DECIMALS)
    return {int(i): float(probabilities[i]) for i in np.flatnonzero(probabilities)}


_probabilities_task = qsrv.distribute_task(target={"cpu": 1})(_probabilities)
