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
(``values``: a numpy array; ``metadata``); the job also has ``status()`` and ``cancel()``.

How the results are produced, on the cluster's workers, with qiskit-aer. From a driver (a
script, a notebook) the work is split into tasks through `qsrv.quantum`, and the job is a
`qsrv.quantum.QuantumJob` (also ``await job``). Inside a task — where the classic programs
call them, in their ``distribute_task`` functions — the task already runs on a worker, so Aer
runs in the task's own process (qiskit-aer's SamplerV2 and EstimatorV2, of which qsrv.quantum's
are the distributed form: the same seed gives the same results either way), the job a qiskit
``PrimitiveJob``.

- ``Sampler`` with ``shots``: `qsrv.quantum.Sampler` (Aer's SamplerV2) samples every circuit
  ``shots`` times; the quasi-distribution is counts / shots, its metadata ``{"shots": shots}``.
- ``Sampler`` without ``shots``: each circuit's final state is computed by Aer (from a
  driver in a task of `qsrv.quantum.statevector`, placed where the state fits; final
  measurements removed), and the exact probabilities of the measured qubits (rounded to 16
  decimals, zeros left out, as the reference did; from a driver in a task next to the state);
  metadata ``{}``. Every measurement must then be final (ConfigError otherwise: give
  ``shots``).
- ``Estimator``: `qsrv.quantum.Estimator` (Aer's EstimatorV2 at precision 0: exact expectation
  values); metadata ``{}``. With ``shots``, as the reference did, each value gets normal noise
  of variance ``variance / shots``, where ``variance = <O^2> - <O>^2`` is also computed by Aer;
  metadata ``{"variance": ..., "shots": shots}``. Values are real (the reference returned
  complex ones for non-Hermitian observables).

``backend_options`` (constructor) go to every AerSimulator, e.g. ``{"device": "GPU"}``
or ``{"method": "matrix_product_state"}``. Other run options are refused with ConfigError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qiskit.primitives import (  # type: ignore[import-untyped]
    BaseEstimatorV1,
    BasePrimitiveJob,
    BaseSamplerV1,
    EstimatorResult,
    PrimitiveJob,
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
             **run_options: Any) -> BasePrimitiveJob:
        shots, seed = _checked_options("Sampler", run_options)
        pairs = list(zip(circuits, parameter_values, strict=True))
        if shots is None:
            qargs = [_final_measured_qubits(c, i) for i, c in enumerate(circuits)]
            if _in_task():
                return _here(self._exact_here, pairs, qargs)
            return self._exact_on_cluster(pairs, qargs)
        if _in_task():
            return _here(self._sample_here, pairs, shots, seed)
        sampler = _SamplerV2(default_shots=shots, seed=_seed_int(seed),
                             options={"backend_options": self._backend_options})
        job = sampler.run([_pub(c, v) for c, v in pairs])
        return QuantumJob(job.refs, lambda _: _sampler_result(circuits, job.result(), shots))

    def _sample_here(self, pairs: list[tuple[Any, Any]], shots: int, seed: Any) -> Any:
        simulator = _simulator(self._backend_options)
        sampler = _aer_primitives().SamplerV2(default_shots=shots, seed=_seed_int(seed),
                                              options={"backend_options": self._backend_options})
        result = sampler.run([_pub(_for_aer(c, simulator), v) for c, v in pairs]).result()
        return _sampler_result([c for c, _ in pairs], result, shots)

    def _exact_on_cluster(self, pairs: list[tuple[Any, Any]],
                          qargs: list[list[int]]) -> QuantumJob[Any]:
        refs: list[ObjectRef] = []
        for (circuit, values), measured in zip(pairs, qargs, strict=True):
            binds = dict(zip(circuit.parameters, values, strict=True))
            state = statevector(circuit, parameter_values=binds,
                                backend_options=self._backend_options)
            refs.append(_probabilities_task(state, measured))
        return QuantumJob(refs, _exact_result)

    def _exact_here(self, pairs: list[tuple[Any, Any]], qargs: list[list[int]]) -> Any:
        simulator = _simulator({"method": "statevector", **self._backend_options})
        bodies = []
        for circuit, values in pairs:
            body = circuit.remove_final_measurements(inplace=False)
            if values:
                body = body.assign_parameters(list(values))
            body = _for_aer(body, simulator).copy()
            body.save_statevector()
            bodies.append(body)
        result = simulator.run(bodies).result()
        return _exact_result([_probabilities(np.asarray(result.get_statevector(i)), measured)
                              for i, measured in enumerate(qargs)])


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
             **run_options: Any) -> BasePrimitiveJob:
        shots, seed = _checked_options("Estimator", run_options)
        triples = zip(circuits, observables, parameter_values, strict=True)
        if shots is None:
            pubs = [_pub(c, v, o) for c, o, v in triples]
        else:  # <O> and <O^2>, for the variance
            pubs = [_pub(c, v, [o, (o @ o).simplify(atol=0)]) for c, o, v in triples]
        options = {"backend_options": self._backend_options}
        if _in_task():
            simulator = _simulator(self._backend_options)
            here = [(_for_aer(pub[0], simulator), *pub[1:]) for pub in pubs]
            return _here(lambda: _estimator_result(
                _aer_primitives().EstimatorV2(options=options).run(here).result(), shots, seed))
        job = _EstimatorV2(options=options).run(pubs)
        return QuantumJob(job.refs, lambda _: _estimator_result(job.result(), shots, seed))


# -- helpers --------------------------------------------------------------------------------


def _in_task() -> bool:
    """Inside a task the primitives run Aer in the task's own process (the task already runs on
    a worker, and qsrv.quantum plans its tasks from a driver)."""
    try:
        qsrv.runtime_context()
    except RuntimeError:
        return False
    return True


def _here(function: Callable[..., Any], *args: Any) -> BasePrimitiveJob:
    """A job that runs `function(*args)` in this process (in a thread, as qiskit's reference
    primitives ran)."""
    job = PrimitiveJob(function, *args)
    job._submit()
    return job


def _aer_primitives() -> Any:
    """qiskit-aer's V2 primitives (imported when first run in a task)."""
    import qiskit_aer.primitives  # type: ignore[import-untyped]

    return qiskit_aer.primitives


def _simulator(backend_options: dict[str, Any]) -> Any:
    from qiskit_aer import AerSimulator

    return AerSimulator(**backend_options)


#: Instructions Aer runs without their being in its target (directives, classical flow).
_ALWAYS_SUPPORTED = frozenset({"barrier", "measure", "reset", "delay", "if_else", "for_loop",
                               "while_loop", "switch_case", "break_loop", "continue_loop",
                               "store", "initialize"})


def _for_aer(circuit: Any, simulator: Any) -> Any:
    """The circuit as Aer runs it, as qsrv.quantum prepares it on the workers: unchanged when
    Aer supports every instruction, else transpiled for the simulator (optimization level 0)."""
    names = {instruction.operation.name for instruction in circuit.data}
    if names <= set(simulator.target.operation_names) | _ALWAYS_SUPPORTED:
        return circuit
    from qiskit import transpile  # type: ignore[import-untyped]

    return transpile(circuit, simulator, optimization_level=0)


def _sampler_result(circuits: Sequence[Any], pub_results: Any, shots: int) -> Any:
    return SamplerResult(
        [QuasiDistribution({k: n / shots for k, n in _counts(c, r.data).items()}, shots=shots)
         for c, r in zip(circuits, pub_results, strict=True)],
        [{"shots": shots} for _ in circuits])


def _exact_result(probabilities: list[dict[int, float]]) -> Any:
    return SamplerResult([QuasiDistribution(p) for p in probabilities],
                         [{} for _ in probabilities])


def _estimator_result(pub_results: Any, shots: int | None, seed: Any) -> Any:
    """V1 values from V2 results: exact; or, with shots, each value with normal noise of
    variance (<O^2> - <O>^2) / shots, as qiskit's reference Estimator drew it."""
    evs = [np.asarray(r.data.evs, dtype=float) for r in pub_results]
    if shots is None:
        return EstimatorResult(np.array([float(e) for e in evs]), [{} for _ in evs])
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    values, metadata = [], []
    for mean, square in evs:
        variance = max(float(square - mean ** 2), 0.0)
        values.append(rng.normal(mean, np.sqrt(variance / shots)))
        metadata.append({"variance": variance, "shots": shots})
    return EstimatorResult(np.array(values, dtype=float), metadata)


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
