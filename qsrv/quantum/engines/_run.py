"""Running a program inside a worker's executor.

`execute` is what a quantum job's task calls. Vendor libraries are imported on first use and
stay imported; programs read and simulators built are kept at module level, so the second job
of a session in the same (warm) executor pays neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qsrv.errors import InvalidProgramError
from qsrv.quantum.engines._platforms import PARTS
from qsrv.quantum.engines._program import Program, describe
from qsrv.quantum.engines._validate import check_shots, check_variables


@dataclass(frozen=True, slots=True)
class EngineResult:
    """A job's outcome.

    ``counts``: outcome -> times seen: bitstrings in qiskit's order (Aer; ``"<i>:<bits>"``
    when the program holds several circuits), Perceval states (``"|0,1>"``; none for the
    ``probs`` command), Pulser bitstrings. ``native``: the engine's own serialisation as text
    — Aer: json of qiskit's ``Result.to_dict()``; Perceval:
    ``json.dumps(perceval.serialization.serialize(result))`` (what a Perceval ``RemoteJob``
    decodes); Pulser: None.
    """

    counts: dict[str, int] = field(hash=False)
    native: str | None = None


def execute(program: Program, shots: int, variables: Mapping[str, Any], *, platform: str,
            seed: int | None = None, options: Mapping[str, Any] | None = None) -> EngineResult:
    """Run `program` for `shots` with its parameters bound from `variables` on `platform`'s
    engine (a name such as ``"aer.statevector.cpu"``), seeded with `seed` so that it equals
    the engine run directly with that seed. `options`: engine options (Aer's backend options
    such as ``precision``; Pulser's ``sampling_rate``, ``with_modulation``; none for
    Perceval); an unknown one is refused."""
    if platform not in PARTS:
        raise InvalidProgramError(f"unknown platform {platform!r}; known: {sorted(PARTS)}")
    engine, method, device = PARTS[platform]
    if program.engine != engine:
        raise InvalidProgramError(f"a {program.kind} program runs on the {program.engine} "
                                  f"engine; platform {platform} runs {engine} programs")
    check_shots(shots)
    check_variables(describe(program), variables)
    opts = dict(options or {})
    if engine == "aer":
        from qsrv.quantum.engines import _aer

        counts, native = _aer.execute(program, shots, variables, method=method, device=device,
                                      seed=seed, options=opts)
        return EngineResult(counts, native)
    if engine == "perceval":
        from qsrv.quantum.engines import _perceval

        counts, native = _perceval.execute(program, shots, variables, seed=seed, options=opts)
        return EngineResult(counts, native)
    from qsrv.quantum.engines import _pulser

    return EngineResult(_pulser.execute(program, shots, variables, seed=seed, options=opts))
