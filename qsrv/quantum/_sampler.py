"""`Sampler`: qiskit's BaseSamplerV2 over the cluster, bit-for-bit qiskit-aer's SamplerV2.

Aer's SamplerV2 groups PUBs by shots (in order of first appearance) and runs each group as one
``AerSimulator.run`` call over every (circuit, parameter binding) of the group — experiment *i*
of the call seeded with ``seed + 2113 * i``. Here each group is cut into contiguous chunks of
experiments, each chunk is a task, and a chunk starting at experiment *k* is seeded with
``derive_seed(seed, k)``: every experiment gets the seed Aer would have given it.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from qiskit.primitives.backend_sampler_v2 import _analyze_circuit  # type: ignore[import-untyped]
from qiskit.primitives.base import BaseSamplerV2  # type: ignore[import-untyped]
from qiskit.primitives.containers import (  # type: ignore[import-untyped]
    BitArray,
    DataBin,
    PrimitiveResult,
    SamplerPubLike,
    SamplerPubResult,
)
from qiskit.primitives.containers.sampler_pub import SamplerPub  # type: ignore[import-untyped]

from qsrv.client import ObjectRef
from qsrv.quantum import _worker
from qsrv.quantum._common import Options, Planner, chunks, largest, make_options, submit
from qsrv.quantum._job import QuantumJob


def parameter_binds(pub: SamplerPub | Any) -> dict[Any, np.ndarray]:
    """{parameter: flat array of its values}, in the order Aer's primitives pass them."""
    circuit = pub.circuit
    array = pub.parameter_values.as_array(circuit.parameters)
    return {p: array[..., i].ravel() for i, p in enumerate(circuit.parameters)}


class Sampler(BaseSamplerV2):  # type: ignore[misc]
    """A SamplerV2 whose PUBs (and large parameter sweeps) run as tasks over the cluster.

    Constructed as ``qiskit_aer.primitives.SamplerV2``: ``Sampler(default_shots=1024,
    seed=None, options={"backend_options": {...}, "run_options": {...}})``, plus qsrv's
    ``experiments_per_task`` and ``task_options``. With the same seed its counts and bitstrings
    are those of Aer's own SamplerV2.
    """

    def __init__(self, *, default_shots: int = 1024, seed: int | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self._default_shots = default_shots
        self._seed = seed
        self._options = make_options(options, estimator=False)

    @property
    def default_shots(self) -> int:
        return self._default_shots

    @property
    def seed(self) -> int | None:
        return self._seed

    @property
    def options(self) -> Options:
        return self._options

    def run(self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None
            ) -> QuantumJob[PrimitiveResult[SamplerPubResult]]:
        """Submit the PUBs' tasks at once; the job's ``result()`` (or ``await job``) collects."""
        if shots is None:
            shots = self._default_shots
        coerced = [SamplerPub.coerce(pub, shots) for pub in pubs]
        for i, pub in enumerate(coerced):
            if len(pub.circuit.cregs) == 0:
                warnings.warn(
                    f"The {i}-th pub's circuit has no output classical registers and so the "
                    "result will be empty. Did you mean to add measurement instructions?",
                    UserWarning, stacklevel=2)
        return self._submit(coerced)

    # ---- planning and submission -----------------------------------------------------------
    def _base_seed(self, run_options: dict[str, Any]) -> int:
        seed = self._seed
        if seed is None:
            seed = run_options.get("seed_simulator")
        if seed is None:  # Aer draws one per run; draw it here so that every chunk shares it
            seed = secrets.randbits(63)
        return int(seed)

    def _submit(self, pubs: list[SamplerPub]) -> QuantumJob[PrimitiveResult[SamplerPubResult]]:
        planner = Planner(self._options, [pub.circuit.num_qubits for pub in pubs])
        run_options = {k: v for k, v in self._options.run_options.items()
                       if k not in ("shots", "parameter_binds", "memory", "seed_simulator")}
        seed = self._base_seed(self._options.run_options)
        binds = [parameter_binds(pub) for pub in pubs]
        groups: dict[int, list[int]] = {}
        for i, pub in enumerate(pubs):
            groups.setdefault(pub.shots, []).append(i)
        refs: list[ObjectRef] = []
        # per pub: [(task index, first row in the task's output for this pub)] in order
        layout: list[list[tuple[int, int]]] = [[] for _ in pubs]
        for shots, members in groups.items():
            experiments = [(i, j) for i in members for j in range(pubs[i].parameter_values.size)]
            for lo, hi in chunks(len(experiments), planner.per_task(len(experiments))):
                parts: list[tuple[Any, dict[Any, Any]]] = []
                owners: list[int] = []
                k = lo
                while k < hi:
                    i, j = experiments[k]
                    n = min(hi - k, pubs[i].parameter_values.size - j)
                    parts.append((pubs[i].circuit,
                                  {p: v[j:j + n] for p, v in binds[i].items()}))
                    owners.append(i)
                    k += n
                for part_index, i in enumerate(owners):
                    layout[i].append((len(refs), part_index))
                need = largest([planner.needs[i] for i in owners])
                refs.append(submit(_worker.sample_chunk, need, self._options, parts, shots,
                                   _worker.derive_seed(seed, lo), self._options.backend_options,
                                   run_options))

        def assemble(values: list[Any]) -> PrimitiveResult[SamplerPubResult]:
            return PrimitiveResult([_pub_result(pub, layout[i], values)
                                    for i, pub in enumerate(pubs)], metadata={"version": 2})

        return QuantumJob(refs, assemble)


def _pub_result(pub: SamplerPub, layout: list[tuple[int, int]],
                values: list[Any]) -> SamplerPubResult:
    meas_info, _ = _analyze_circuit(pub.circuit)
    shape = pub.parameter_values.shape
    shots = pub.shots
    pieces: dict[str, list[np.ndarray]] = {item.creg_name: [] for item in meas_info}
    simulator_metadata: dict[str, Any] = {}
    for n, (task, part) in enumerate(layout):
        arrays, metadata = values[task]
        if n == 0:
            simulator_metadata = metadata
        for name in pieces:
            pieces[name].append(arrays[part][name])
    meas = {}
    for item in meas_info:
        if pieces[item.creg_name]:
            flat = np.concatenate(pieces[item.creg_name], axis=0)
        else:  # a PUB with no parameter bindings at all
            flat = np.zeros((0, shots, item.num_bytes), dtype=np.uint8)
        meas[item.creg_name] = BitArray(flat.reshape((*shape, shots, item.num_bytes)),
                                        item.num_bits)
    return SamplerPubResult(
        DataBin(**meas, shape=shape),
        metadata={"shots": shots, "circuit_metadata": pub.circuit.metadata,
                  "simulator_metadata": simulator_metadata},
    )
