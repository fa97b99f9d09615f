"""`Estimator`: qiskit's BaseEstimatorV2 over the cluster, matching qiskit-aer's EstimatorV2.

Aer's EstimatorV2 runs each PUB as one ``AerSimulator.run`` over its parameter bindings (with
``run_options``, seed included), then broadcasts bindings against observables and, when the
precision is > 0, adds normal noise from ``numpy.random.default_rng(seed_simulator)``. Here a
PUB's bindings are cut into chunks (a task each, chunk *k* seeded as Aer seeds its experiment
*k*); the broadcasting and the noise happen in the driver, exactly as Aer does them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from qiskit.primitives.base import BaseEstimatorV2  # type: ignore[import-untyped]
from qiskit.primitives.containers import DataBin, EstimatorPubLike, PrimitiveResult, PubResult  # type: ignore[import-untyped]
from qiskit.primitives.containers.estimator_pub import EstimatorPub  # type: ignore[import-untyped]

import qsrv
from qsrv.client import ObjectRef
from qsrv.quantum import _worker
from qsrv.quantum._common import Options, Planner, chunks, make_options, slice_binds, submit
from qsrv.quantum._job import QuantumJob
from qsrv.quantum._sampler import parameter_binds


class Estimator(BaseEstimatorV2):  # type: ignore[misc]
    """An EstimatorV2 whose PUBs (and large parameter sweeps) run as tasks over the cluster.

    Constructed as ``qiskit_aer.primitives.EstimatorV2``: ``Estimator(options={
    "default_precision": 0.0, "backend_options": {...}, "run_options": {...}})``, plus qsrv's
    ``experiments_per_task`` and ``task_options``.
    """

    def __init__(self, *, options: dict[str, Any] | None = None) -> None:
        self._options = make_options(options, estimator=True)

    @property
    def options(self) -> Options:
        return self._options

    def run(self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None
            ) -> QuantumJob[PrimitiveResult[PubResult]]:
        """Submit the PUBs' tasks at once; the job's ``result()`` (or ``await job``) collects."""
        if precision is None:
            precision = self._options.default_precision
        coerced = [EstimatorPub.coerce(pub, precision) for pub in pubs]
        for i, pub in enumerate(coerced):
            if pub.precision < 0.0:
                raise ValueError(
                    f"The {i}-th pub has precision less than 0 ({pub.precision}). "
                    "But precision should be equal to or larger than 0.")
        return self._submit(coerced)

    def _submit(self, pubs: list[EstimatorPub]) -> QuantumJob[PrimitiveResult[PubResult]]:
        planner = Planner(self._options, [pub.circuit.num_qubits for pub in pubs])
        run_options = dict(self._options.run_options)
        seed = run_options.pop("seed_simulator", None)
        refs: list[ObjectRef] = []
        spans: list[tuple[int, int]] = []
        for pub, need in zip(pubs, planner.needs, strict=True):
            binds = parameter_binds(pub)
            paulis = sorted({p for obs in pub.observables.ravel() for p in obs})
            size = pub.parameter_values.size
            ranges = chunks(size, planner.per_task(size))
            circuit: Any = pub.circuit if len(ranges) < 2 else qsrv.put(pub.circuit)
            first = len(refs)
            for lo, hi in ranges:
                chunk_seed = None if seed is None else _worker.derive_seed(int(seed), lo)
                refs.append(submit(_worker.estimate_chunk, need, self._options, circuit,
                                   paulis, slice_binds(binds, lo, hi), chunk_seed,
                                   self._options.backend_options, run_options))
            spans.append((first, len(refs)))

        def assemble(values: list[Any]) -> PrimitiveResult[PubResult]:
            return PrimitiveResult(
                [self._pub_result(pub, values[lo:hi], seed)
                 for pub, (lo, hi) in zip(pubs, spans, strict=True)], metadata={"version": 2})

        return QuantumJob(refs, assemble)

    @staticmethod
    def _pub_result(pub: EstimatorPub, values: list[Any], seed: Any) -> PubResult:
        flat: list[dict[str, float]] = [v for chunk, _ in values for v in chunk]
        simulator_metadata = values[0][1] if values else {}
        param_shape = pub.parameter_values.shape
        param_indices = np.fromiter(np.ndindex(param_shape), dtype=object).reshape(param_shape)
        bc_param_ind, bc_obs = np.broadcast_arrays(param_indices, pub.observables)
        flat_index_map = {tup: i for i, tup in enumerate(param_indices.ravel())}
        evs = np.zeros_like(bc_param_ind, dtype=float)
        stds = np.full(bc_param_ind.shape, pub.precision)
        for index in np.ndindex(*bc_param_ind.shape):
            expvals = flat[flat_index_map[bc_param_ind[index]]]
            observable = cast("dict[str, float]", bc_obs[index])
            for pauli, coeff in observable.items():
                evs[index] += expvals[pauli] * coeff
        if pub.precision > 0:
            rng = np.random.default_rng(seed)
            if not np.all(np.isreal(evs)):
                raise ValueError("Given operator is not Hermitian and noise cannot be added.")
            evs = rng.normal(evs, pub.precision, evs.shape)
        return PubResult(
            DataBin(evs=evs, stds=stds, shape=evs.shape),
            metadata={"target_precision": pub.precision,
                      "circuit_metadata": pub.circuit.metadata,
                      "simulator_metadata": simulator_metadata},
        )
