"""What the Scaleway clients send and read, through the vendors' own libraries.

- qiskit-scaleway, CUDA-Q and scaleway-qaas-client send a ``qio`` computation model (OpenQASM 2
  or 3 programs, the backend's options) and ``qio`` computation parameters (shots, memory);
  each program becomes a qsrv `Program` read by qio, and each result goes back as a qio
  ``QuantumProgramResult`` holding qiskit's ``Result`` dictionary (the engine's own).
- Perceval's remote processor sends its job payload (command, serialised experiment,
  ``max_shots``/``max_samples``...): that object is already a qsrv ``perceval`` program; its
  result goes back as Perceval serialised it.

Nothing here parses a vendor format by hand: qio's dataclasses read and write its JSON, qiskit
and Perceval read their programs where the engines run them (``describe`` checks them first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from qsrv.errors import InvalidRequestError
from qsrv.quantum.engines import Program

__all__ = [
    "Computation",
    "Parameters",
    "computation_from_model",
    "parameters_from",
    "perceval_job",
    "perceval_result",
    "qio_result",
]

# qio's QuantumProgramSerializationFormat names this door runs, and the program kind of each.
_KINDS = {"QASM_V2": "qiskit.qasm2", "QASM_V3": "qiskit.qasm3"}


@dataclass(frozen=True, slots=True)
class Computation:
    """A qio computation model, read: its programs (one job each) and its backend's options."""

    programs: tuple[Program, ...]
    options: dict[str, Any] = field(default_factory=dict)
    noise_model: bool = False


@dataclass(frozen=True, slots=True)
class Parameters:
    """qio computation parameters: shots per program and run options (``memory``)."""

    shots: int | None
    options: dict[str, Any] = field(default_factory=dict)


def _text(value: Any, what: str) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"{what} must be a JSON text")
    return value


def computation_from_model(payload: Any) -> Computation:
    """The programs and options of a model's payload (a qio ``QuantumComputationModel``)."""
    from qio.core import (  # type: ignore[import-untyped]
        QuantumComputationModel,
        QuantumProgramCompressionFormat,
    )
    from qio.utils.compression import zlib_to_str  # type: ignore[import-untyped]

    text = _text(payload, "a model's payload")
    try:
        model = QuantumComputationModel.from_json_str(text)
    except Exception as exc:  # qio (dataclasses_json, json) raises many kinds: all mean malformed
        raise InvalidRequestError(
            f"malformed payload: not a qio QuantumComputationModel "
            f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not model.programs:
        raise InvalidRequestError("malformed payload: the model holds no program")
    programs = []
    for i, program in enumerate(model.programs):
        fmt = getattr(program.serialization_format, "name", str(program.serialization_format))
        kind = _KINDS.get(fmt)
        if kind is None:
            raise InvalidRequestError(
                f"program {i} of the model is {fmt}; this gateway runs "
                f"{', '.join(sorted(_KINDS))} programs")
        try:
            compressed = program.compression_format == \
                QuantumProgramCompressionFormat.ZLIB_BASE64_V1
            text = zlib_to_str(program.serialization) if compressed else program.serialization
        except Exception as exc:
            raise InvalidRequestError(
                f"malformed payload: program {i} cannot be decompressed "
                f"({type(exc).__name__}: {str(exc)[:200]})") from None
        programs.append(Program(kind, text))
    backend = model.backend
    options = dict(backend.options or {}) if backend is not None else {}
    return Computation(tuple(programs), options, model.noise_model is not None)


def parameters_from(raw: Any) -> Parameters:
    """A job's ``parameters`` (qio ``QuantumComputationParameters``), or no shots if absent."""
    if raw is None or raw == "":
        return Parameters(None)
    from qio.core import QuantumComputationParameters

    text = _text(raw, "a job's parameters")
    try:
        parameters = QuantumComputationParameters.from_json_str(text)
    except Exception as exc:
        raise InvalidRequestError(
            f"malformed parameters: not qio QuantumComputationParameters "
            f"({type(exc).__name__}: {str(exc)[:200]})") from None
    shots = parameters.shots
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise InvalidRequestError(f"shots must be a positive integer, got {shots!r}")
    return Parameters(shots, dict(parameters.options or {}))


def perceval_job(raw: Any) -> tuple[Program, int, dict[str, Any]]:
    """A Perceval remote job's payload: its program, the shots it may use (``max_shots``, else
    ``max_samples``) and the circuit parameters' values it carries."""
    text = _text(raw, "percevalCircuit")
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"malformed percevalCircuit: not JSON ({exc})") from None
    if not isinstance(payload, dict) or "command" not in payload or "experiment" not in payload:
        raise InvalidRequestError(
            "malformed percevalCircuit: a Perceval job payload has 'command' and 'experiment'")
    shots = payload.get("max_shots") or payload.get("max_samples")
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise InvalidRequestError(
            f"a Perceval job needs max_shots or max_samples (a positive integer), got {shots!r}")
    return Program("perceval", text), shots, {}


def perceval_result(native: str, program: Program) -> str:
    """The text a Perceval remote job decodes: the engine's serialised result, with the
    payload's ``job_context`` (how Perceval maps results to the command it was asked)."""
    payload = json.loads(program.data)
    context = payload.get("job_context")
    if not context:
        return native
    result = json.loads(native)
    if isinstance(result, dict) and "job_context" not in result:
        result["job_context"] = context  # plain JSON: Perceval's deserialize keeps it as is
        return json.dumps(result)
    return native


def qio_result(native: str) -> str:
    """A qio ``QuantumProgramResult`` (JSON) holding qiskit's ``Result`` dictionary."""
    from qio.core import QuantumProgramResult

    return str(QuantumProgramResult.from_qiskit_result_dict(native).to_json_str())
