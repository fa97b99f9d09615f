"""Programs as plain text: what a job runs, whatever engine runs it.

A `Program` is a kind and a text, so it can be stored (SQLite), sent (JSON) and hashed without
importing any vendor library. The vendors' own libraries turn objects into programs and back:
qiskit (qasm2, qasm3, qpy), Perceval (`perceval.serialization`), Pulser (abstract repr).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qsrv.errors import InvalidProgramError

#: Program kinds, and the engine that runs each.
KINDS: dict[str, str] = {
    "qiskit.qasm2": "aer",
    "qiskit.qasm3": "aer",
    "qiskit.qpy": "aer",
    "perceval": "perceval",
    "pulser": "pulser",
}


@dataclass(frozen=True, slots=True)
class Program:
    """What a quantum job runs: ``kind`` (one of ``KINDS``) and its text ``data``.

    - ``qiskit.qasm2`` / ``qiskit.qasm3``: OpenQASM text (one circuit; QASM 3 ``input float``
      declarations are parameters);
    - ``qiskit.qpy``: base64 of a QPY file (one or more circuits; keeps their Parameters);
    - ``pulser``: a Pulser ``Sequence.to_abstract_repr()`` JSON (may declare variables);
    - ``perceval``: JSON made by `perceval_program` — the same object a Perceval remote
      processor sends: ``command``, ``experiment`` (serialised by Perceval: circuit, input
      state, heralds, post-selection), optional ``parameters``, ``max_shots``,
      ``max_samples``, ``iterator``, ``job_context``.
    """

    kind: str
    data: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidProgramError(f"unknown program kind {self.kind!r}; known: "
                                      f"{sorted(KINDS)}")
        if not isinstance(self.data, str):
            raise InvalidProgramError(f"a program's data is text, got {type(self.data).__name__}")

    @property
    def engine(self) -> str:
        """The engine that runs this kind of program: ``aer``, ``perceval`` or ``pulser``."""
        return KINDS[self.kind]

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "data": self.data}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Program:
        try:
            return cls(str(value["kind"]), value["data"])
        except KeyError as exc:
            raise InvalidProgramError(f"a program needs 'kind' and 'data', missing {exc}") \
                from None


@dataclass(frozen=True, slots=True)
class ProgramInfo:
    """What `describe` reads from a program: its engine, its width (qubits of the widest
    circuit, modes, atoms), its free parameters (names the job's variables must bind) and how
    many circuits it holds."""

    engine: str
    width: int
    parameters: frozenset[str]
    circuits: int


# ---- building programs ---------------------------------------------------------------------------
def _is_qiskit_circuit(obj: Any) -> bool:
    return any(c.__name__ == "QuantumCircuit" and c.__module__.startswith("qiskit")
               for c in type(obj).__mro__)


def _module_root(obj: Any) -> str:
    return type(obj).__module__.split(".", 1)[0]


def qpy_program(circuits: list[Any]) -> Program:
    from qiskit import qpy  # type: ignore[import-untyped]

    buffer = io.BytesIO()
    qpy.dump(circuits, buffer)
    return Program("qiskit.qpy", base64.b64encode(buffer.getvalue()).decode("ascii"))


def perceval_program(circuit: Any, input_state: Any = None, command: str = "sample_count",
                     **extra: Any) -> Program:
    """A ``perceval`` program: `circuit` (a Perceval ``Circuit``, ``Experiment`` or
    ``Processor``) fed with `input_state` (a ``BasicState`` or its text, ``"|1,0>"``), run with
    `command` (``"sample_count"``, ``"samples"`` or ``"probs"``).

    `extra`: ``heralds`` ({mode: photons}), ``postselect`` (a ``PostSelect`` or its text),
    ``min_detected_photons`` (int), ``parameters`` (values of circuit parameters, fixed in the
    program; parameters left free are the job's variables), ``max_samples`` (int).
    """
    from qsrv.quantum.engines import _perceval

    return Program("perceval", _perceval.make_payload(circuit, input_state, command, extra))


def program_from(obj: Any, **kw: Any) -> Program:
    """A `Program` from what a user holds: a qiskit ``QuantumCircuit`` (or a list of them:
    QPY), a Pulser ``Sequence``, a Perceval ``Circuit``/``Experiment``/``Processor`` (with
    ``input_state=`` and `perceval_program`'s keywords), OpenQASM text (2 or 3, told apart by
    its header), or a `Program` (returned as is)."""
    if isinstance(obj, Program):
        if kw:
            raise TypeError(f"program_from(Program) takes no keywords, got {sorted(kw)}")
        return obj
    if isinstance(obj, str):
        if kw:
            raise TypeError(f"program_from(str) takes no keywords, got {sorted(kw)}")
        return _qasm_program(obj)
    if _is_qiskit_circuit(obj):
        if kw:
            raise TypeError(f"program_from(QuantumCircuit) takes no keywords, got {sorted(kw)}")
        return qpy_program([obj])
    if isinstance(obj, list | tuple) and obj and all(_is_qiskit_circuit(c) for c in obj):
        return qpy_program(list(obj))
    root = _module_root(obj)
    if root == "pulser":
        if kw:
            raise TypeError(f"program_from(Sequence) takes no keywords, got {sorted(kw)}")
        return Program("pulser", str(obj.to_abstract_repr()))
    if root in ("perceval", "exqalibur"):
        return perceval_program(obj, **kw)
    raise InvalidProgramError(
        f"cannot make a program from a {type(obj).__module__}.{type(obj).__qualname__}: give a "
        f"qiskit QuantumCircuit, a Pulser Sequence, a Perceval Circuit/Experiment/Processor, "
        f"OpenQASM text or a Program")


def _qasm_program(text: str) -> Program:
    head = text.lstrip()
    while head.startswith("//"):  # leading comments
        head = head.split("\n", 1)[1].lstrip() if "\n" in head else ""
    if head.startswith("OPENQASM 2"):
        return Program("qiskit.qasm2", text)
    if head.startswith("OPENQASM 3"):
        return Program("qiskit.qasm3", text)
    if head.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict) and {"kind", "data"} <= set(value):
            return Program.from_dict(value)
    raise InvalidProgramError("text that is not OpenQASM 2 or 3 (no 'OPENQASM 2.0;' or "
                              "'OPENQASM 3.0;' header) nor a program's JSON")


#: The library each engine reads its programs with, and the extra that installs it.
_LIBRARIES = {"aer": ("qiskit", "qiskit", None), "perceval": ("perceval", "perceval-quandela",
                                                             "perceval"),
              "pulser": ("pulser", "pulser", "pulser")}


def require(engine: str) -> None:
    """Raise `InvalidProgramError` when `engine`'s library is not installed in this process."""
    module, dist, extra = _LIBRARIES[engine]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a broken install, or one blocked in sys.modules
        found = None
    if found is None:
        hint = f" (pip install 'qsrv[{extra}]')" if extra else ""
        raise InvalidProgramError(f"{engine} programs cannot be read here: {dist} is not "
                                  f"installed{hint}")


def describe(program: Program) -> ProgramInfo:
    """The engine, width, free parameters and circuit count of `program`, read with its
    vendor's library; a program that library cannot read raises `InvalidProgramError`."""
    engine = program.engine
    require(engine)
    if engine == "aer":
        from qsrv.quantum.engines import _aer

        return _aer.describe(program)
    if engine == "perceval":
        from qsrv.quantum.engines import _perceval

        return _perceval.describe(program)
    from qsrv.quantum.engines import _pulser

    return _pulser.describe(program)
