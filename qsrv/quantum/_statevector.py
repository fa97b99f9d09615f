"""State vectors as objects: run a circuit, keep its final state in the cluster, start from one.

The state is a numpy array, so a large one (from 13 qubits in double precision) lives in the
node's shared-memory store: the task that made it writes it there once (native copy with its
checksum), tasks and drivers on the node map it read-only without a copy, and other nodes pull
it worker-to-worker, checksum verified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from qsrv.client import ObjectRef
from qsrv.quantum import _worker
from qsrv.quantum._common import Options, Planner, submit


def statevector(circuit: Any, *, initial_state: ObjectRef | np.ndarray | None = None,
                parameter_values: Mapping[Any, float] | None = None,
                backend_options: dict[str, Any] | None = None,
                run_options: dict[str, Any] | None = None,
                task_options: dict[str, Any] | None = None) -> ObjectRef:
    """Run `circuit` as a task and return a ref to its final state vector (a numpy array).

    `initial_state` (a ref, e.g. one this function returned, or an array) is the state the
    circuit starts from instead of ``|0…0>``; final measurements are removed; `parameter_values`
    binds the circuit's parameters ({parameter: value}). The task is placed where the state fits
    (``method`` defaults to ``statevector``; ``precision="single"`` halves the memory), and a
    state that fits no worker raises QuantumPlacementError at once.
    """
    backend = {"method": "statevector", **(backend_options or {})}
    options = Options(backend_options=backend, run_options=dict(run_options or {}),
                      task_options=dict(task_options or {}))
    planner = Planner(options, [circuit.num_qubits])
    binds = dict(parameter_values) if parameter_values else None
    return submit(_worker.statevector, planner.needs[0], options, circuit, initial_state, binds,
                  backend, options.run_options)


def with_initial_state(circuit: Any, state: Any) -> Any:
    """A copy of `circuit` that starts from `state` (an array of 2**n amplitudes) — for tasks
    of one's own that receive a state vector (a ref passed as an argument arrives as the
    array). Uses Aer's ``set_statevector``; the result runs on an AerSimulator."""
    # adds set_statevector to QuantumCircuit:
    import qiskit_aer  # type: ignore[import-untyped]  # noqa: F401
    from qiskit import QuantumCircuit  # type: ignore[import-untyped]

    amplitudes = np.asarray(state, dtype=np.complex128).ravel()
    if amplitudes.size != 1 << circuit.num_qubits:
        raise ValueError(f"state has {amplitudes.size} amplitudes; a {circuit.num_qubits}-qubit "
                         f"circuit needs {1 << circuit.num_qubits}")
    full = QuantumCircuit(*circuit.qregs, *circuit.cregs)
    full.set_statevector(amplitudes)
    return full.compose(circuit)
