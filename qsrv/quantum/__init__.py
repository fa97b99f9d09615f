"""Circuits as first-class work: what workers can simulate, and Aer primitives over the cluster.

    from qsrv.quantum import Sampler, Estimator      # instead of qiskit_aer.primitives'
    job = Sampler(default_shots=1000, seed=7).run([(circuit, values)])
    result = job.result()                            # or: result = await job

- `probe_capabilities`: run by each worker agent after it registers; what its Aer can do
  (devices, methods, precisions, memory → largest state in qubits). ``qsrv status`` shows it.
- `backends`: the simulators the cluster offers, with their workers.
- `Sampler`, `Estimator`: qiskit's V2 primitives, split into tasks, placed by need, equal
  bit for bit to qiskit-aer's own with the same seeds.
- `statevector`, `with_initial_state`: final states as object refs, and states as inputs.
- `state_bytes`, `max_qubits`: memory of a simulation, and the qubits that fit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qsrv.errors import QuantumPlacementError

if TYPE_CHECKING:
    from qsrv.quantum._capabilities import max_qubits, probe_capabilities, state_bytes
    from qsrv.quantum._common import Options
    from qsrv.quantum._estimator import Estimator
    from qsrv.quantum._job import QuantumJob
    from qsrv.quantum._placement import backends
    from qsrv.quantum._sampler import Sampler
    from qsrv.quantum._statevector import statevector, with_initial_state

__all__ = [
    "Estimator",
    "Options",
    "QuantumJob",
    "QuantumPlacementError",
    "Sampler",
    "backends",
    "max_qubits",
    "probe_capabilities",
    "state_bytes",
    "statevector",
    "with_initial_state",
]

# Imported on first use: qiskit takes a second and ~60 MiB, and who needs only
# `qsrv.quantum.engines` (a gateway reading programs) should not pay for the primitives.
_WHERE = {
    "Estimator": "_estimator", "Options": "_common", "QuantumJob": "_job", "Sampler": "_sampler",
    "backends": "_placement", "max_qubits": "_capabilities",
    "probe_capabilities": "_capabilities", "state_bytes": "_capabilities",
    "statevector": "_statevector", "with_initial_state": "_statevector",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
