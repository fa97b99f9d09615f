"""Engines and platforms: what the workers can simulate, named and checked.

    from qsrv.quantum import engines
    program = engines.program_from(circuit)               # QuantumCircuit, Pulser Sequence,
                                                          # Perceval circuit (+input_state=)
    offer = {p.name: p for p in engines.platforms(qsrv.status())}["aer.statevector.cpu"]
    engines.check(offer, program, shots=1000, variables={"theta": 0.3})   # strict validation
    result = engines.execute(program, 1000, {"theta": 0.3}, platform=offer.name, seed=7)

- `Program` (kind, data): qiskit QASM 2/3 or QPY, a Pulser abstract representation, a
  Perceval remote-processor payload (`perceval_program`). Plain text: stored and sent as is.
- `describe`: engine, width, free parameters and circuit count of a program.
- `platforms`: named offers (``aer.statevector.cpu``, ``aer.statevector.gpu``, ``aer.mps.cpu``,
  ``perceval.slos.cpu``, ``pulser.qutip.cpu``) derived from ``qsrv.status()``: limits,
  hardware, availability, the target a reservation for one asks.
- `check`: refuses a job its platform cannot run, with the reason (`InvalidProgramError`).
- `execute`: runs a job in a worker's executor (imports and simulators kept warm), seeded so
  that it equals the engine run directly with the same seed.

Perceval (``pip install "qsrv[perceval]"``) and Pulser (``"qsrv[pulser]"``) are optional and
imported only when used: without them, their platforms are absent.
"""

from qsrv.errors import InvalidProgramError
from qsrv.quantum.engines._platforms import Hardware, Platform, platforms
from qsrv.quantum.engines._probe import probe_engines
from qsrv.quantum.engines._program import (
    KINDS,
    Program,
    ProgramInfo,
    describe,
    perceval_program,
    program_from,
)
from qsrv.quantum.engines._run import EngineResult, execute
from qsrv.quantum.engines._validate import check, check_options

__all__ = [
    "KINDS",
    "EngineResult",
    "Hardware",
    "InvalidProgramError",
    "Platform",
    "Program",
    "ProgramInfo",
    "check",
    "check_options",
    "describe",
    "execute",
    "perceval_program",
    "platforms",
    "probe_engines",
    "program_from",
]
