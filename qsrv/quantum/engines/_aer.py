"""qiskit programs (OpenQASM 2, OpenQASM 3, QPY) on qiskit-aer.

Read with qiskit's own readers; parameters bound by name from the job's variables; run on an
``AerSimulator`` built once per executor process and method (warm sessions), seeded with
``seed_simulator`` so that a job equals ``AerSimulator(method=...).run(bound, shots=...,
seed_simulator=seed)`` run directly (``memory`` and ``noise_model``, when a job gives them, are
passed to that run as well).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Mapping
from typing import Any

from qsrv.errors import InvalidProgramError
from qsrv.quantum.engines._cache import Lru
from qsrv.quantum.engines._program import Program, ProgramInfo

#: Platform methods and the AerSimulator method each runs.
METHODS = {"statevector": "statevector", "mps": "matrix_product_state"}
#: Options a job may give to the AerSimulator it runs on (backend options).
BACKEND_OPTIONS = frozenset({"precision", "max_parallel_threads", "max_parallel_experiments",
                             "max_parallel_shots", "fusion_enable", "blocking_enable",
                             "matrix_product_state_max_bond_dimension",
                             "matrix_product_state_truncation_threshold"})
#: Options a job may give to its run: ``memory`` (a bool) keeps each shot's outcome in the
#: result (``Result.get_memory``; qiskit's ``BackendSamplerV2`` reads it); ``noise_model``, a
#: qio ``QuantumNoiseModel`` (its JSON text: qiskit-aer's ``NoiseModel`` as qio carries it),
#: runs the circuits with that noise.
RUN_OPTIONS = frozenset({"memory", "noise_model"})
#: Every option a job may give.
OPTIONS = BACKEND_OPTIONS | RUN_OPTIONS

_circuits: Lru[tuple[str, str], list[Any]] = Lru(16)
_simulators: dict[tuple[tuple[str, Any], ...], Any] = {}
_noise_models: Lru[str, Any] = Lru(8)


def _digest(program: Program) -> tuple[str, str]:
    return program.kind, hashlib.sha256(program.data.encode()).hexdigest()


#: The largest bracketed number (register size, index) a QASM program may hold: far above any
#: width Aer simulates, far below what would exhaust memory when qiskit builds the circuit.
MAX_QASM_INDEX = 1 << 16
_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")


def _guard(text: str) -> None:
    """Refuse, before qiskit reads it, QASM text that declares a register too large to build
    (qiskit makes an object per qubit: ``qreg q[1000000000];`` would take the process down)."""
    largest = max((int(n) for n in _BRACKETED.findall(text)), default=0)
    if largest > MAX_QASM_INDEX:
        raise InvalidProgramError(f"the program declares or indexes a register of "
                                  f"{largest} (qu)bits; at most {MAX_QASM_INDEX}")


def _read(program: Program) -> list[Any]:
    if program.kind in ("qiskit.qasm2", "qiskit.qasm3"):
        _guard(program.data)
    if program.kind == "qiskit.qasm2":
        from qiskit import qasm2  # type: ignore[import-untyped]

        return [qasm2.loads(program.data,
                            custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)]
    if program.kind == "qiskit.qasm3":
        from qiskit import qasm3

        return [qasm3.loads(program.data)]
    from qiskit import qpy

    raw = base64.b64decode(program.data.encode("ascii"), validate=True)
    return list(qpy.load(io.BytesIO(raw)))


def circuits(program: Program) -> list[Any]:
    """The program's circuits (read once per executor and kept for the next jobs)."""
    key = _digest(program)
    found = _circuits.get(key)
    if found is not None:
        return found
    try:
        found = _read(program)
    except InvalidProgramError:
        raise
    except Exception as exc:  # each reader has its own errors: all mean "cannot read"
        raise InvalidProgramError(f"cannot read the {program.kind} program: "
                                  f"{type(exc).__name__}: {exc}") from None
    if not found:
        raise InvalidProgramError(f"the {program.kind} program holds no circuit")
    return _circuits.put(key, found)


def describe(program: Program) -> ProgramInfo:
    found = circuits(program)
    names = frozenset(p.name for c in found for p in c.parameters)
    return ProgramInfo("aer", max(c.num_qubits for c in found), names, len(found))


def simulator(method: str, device: str, options: Mapping[str, Any]) -> Any:
    """An AerSimulator for this method, device and options, built once per executor."""
    settings = {"method": METHODS[method], "device": device.upper(), **options}
    key = tuple(sorted(settings.items()))
    sim = _simulators.get(key)
    if sim is None:
        from qiskit_aer import AerSimulator  # type: ignore[import-untyped]

        sim = _simulators[key] = AerSimulator(**settings)
    return sim


def noise_model(text: Any) -> Any:
    """qiskit-aer's ``NoiseModel`` from a qio ``QuantumNoiseModel``'s JSON text (read by qio,
    once per executor and kept for the next jobs)."""
    if not isinstance(text, str):
        raise InvalidProgramError("the Aer option noise_model must be a qio QuantumNoiseModel "
                                  "(JSON text)")
    key = hashlib.sha256(text.encode()).hexdigest()
    found = _noise_models.get(key)
    if found is not None:
        return found
    from qio.core import QuantumNoiseModel  # type: ignore[import-untyped]

    try:
        found = QuantumNoiseModel.from_json_str(text).to_qiskit_aer_noise_model()
    except Exception as exc:  # qio and qiskit-aer raise many kinds: all mean "cannot read"
        raise InvalidProgramError(f"cannot read the noise model: {type(exc).__name__}: "
                                  f"{str(exc)[:300]}") from None
    return _noise_models.put(key, found)


def bind(circuit: Any, variables: Mapping[str, Any]) -> Any:
    """`circuit` with its parameters bound by name from `variables`."""
    if not circuit.parameters:
        return circuit
    return circuit.assign_parameters({p: float(variables[p.name]) for p in circuit.parameters})


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    if isinstance(value, complex):
        return [value.real, value.imag]
    return str(value)


def execute(program: Program, shots: int, variables: Mapping[str, Any], *, method: str,
            device: str, seed: int | None, options: Mapping[str, Any]) -> tuple[
                dict[str, int], str]:
    """Counts (qiskit's bit order; keys ``"<i>:<bits>"`` when the program holds several
    circuits) and the json of qiskit's ``Result.to_dict()`` (with each shot's outcome, hex
    as qiskit keeps it, when ``options`` asks ``memory``). `options`: `BACKEND_OPTIONS` and
    `RUN_OPTIONS`."""
    unknown = set(options) - OPTIONS
    if unknown:
        raise InvalidProgramError(f"unknown Aer option(s) {sorted(unknown)}; known: "
                                  f"{sorted(OPTIONS)}")
    memory = options.get("memory", False)
    if not isinstance(memory, bool):
        raise InvalidProgramError(f"the Aer option memory must be true or false, "
                                  f"got {memory!r}")
    from qsrv.quantum import _worker

    sim = simulator(method, device,
                    {k: v for k, v in options.items() if k in BACKEND_OPTIONS})
    bound = [_worker.prepare(bind(c, variables), sim) for c in circuits(program)]
    run_options: dict[str, Any] = {"shots": int(shots)}
    if memory:
        run_options["memory"] = True
    if options.get("noise_model") is not None:
        run_options["noise_model"] = noise_model(options["noise_model"])
    if seed is not None:
        run_options["seed_simulator"] = int(seed)
    result = sim.run(bound, **run_options).result()
    if not result.success:
        raise RuntimeError(f"Aer simulation failed: {result.status}")
    counts: dict[str, int] = {}
    for i in range(len(bound)):
        if "counts" not in result.data(i):  # nothing measured: no counts (qiskit would raise)
            continue
        for bits, n in result.get_counts(i).items():
            counts[f"{i}:{bits}" if len(bound) > 1 else bits] = int(n)
    return counts, json.dumps(result.to_dict(), default=_plain)
