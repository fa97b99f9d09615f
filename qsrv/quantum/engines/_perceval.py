"""Perceval programs on Perceval's local SLOS backend.

A ``perceval`` program is the JSON object a Perceval remote processor sends (the
``percevalCircuit`` of a Scaleway job): ``command``, ``experiment`` (serialised by
``perceval.serialization``), and optionally ``parameters`` (the processor's),
``max_shots``, ``max_samples``, ``iterator`` and ``job_context``. It runs through Perceval's
own ``Processor("SLOS", experiment)`` and ``algorithm.Sampler``, seeded with
``perceval.random_seed``, so a job equals that sampler run directly with the same seed; its
native result is ``perceval.serialization.serialize`` of the command's result dict, as a
Perceval ``RemoteJob`` decodes it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

from qsrv.errors import InvalidProgramError
from qsrv.quantum.engines._program import Program, ProgramInfo

COMMANDS = ("sample_count", "samples", "probs")
BACKEND = "SLOS"
#: Extra keys `perceval_program` accepts.
EXTRA = frozenset({"heralds", "postselect", "min_detected_photons", "parameters",
                   "max_samples"})


def pcvl() -> Any:
    """The ``perceval`` module (imported once per process, on first use)."""
    return importlib.import_module("perceval")


def _serialization() -> Any:
    return importlib.import_module("perceval.serialization")


def _experiment_of(obj: Any) -> Any:
    """A private copy of the experiment of a Circuit, Experiment or Processor."""
    module = pcvl()
    ser = _serialization()
    if isinstance(obj, module.Experiment):
        experiment = obj
    elif hasattr(obj, "experiment") and isinstance(obj.experiment, module.Experiment):
        experiment = obj.experiment  # a Processor (local or remote)
    elif isinstance(obj, module.ACircuit):
        experiment = module.Experiment(obj)
    else:
        raise InvalidProgramError(f"a perceval program needs a Circuit, Experiment or "
                                  f"Processor, got {type(obj).__qualname__}")
    return ser.deserialize(ser.serialize(experiment))  # never touch the caller's objects


def make_payload(obj: Any, input_state: Any, command: str, extra: Mapping[str, Any]) -> str:
    unknown = set(extra) - EXTRA
    if unknown:
        raise TypeError(f"unknown perceval_program keyword(s) {sorted(unknown)}; known: "
                        f"{sorted(EXTRA)}")
    if command not in COMMANDS:
        raise InvalidProgramError(f"unknown Perceval command {command!r}; known: {COMMANDS}")
    module = pcvl()
    experiment = _experiment_of(obj)
    if input_state is not None:
        state = module.BasicState(input_state) if isinstance(input_state, str) else input_state
        experiment.with_input(state)
    for mode, photons in (extra.get("heralds") or {}).items():
        experiment.add_herald(int(mode), int(photons))
    postselect = extra.get("postselect")
    if postselect is not None:
        experiment.set_postselection(module.PostSelect(postselect)
                                     if isinstance(postselect, str) else postselect)
    if extra.get("min_detected_photons") is not None:
        experiment.min_detected_photons_filter(int(extra["min_detected_photons"]))
    values = extra.get("parameters") or {}
    set_parameters(experiment, values)
    if experiment.input_state is None:
        raise InvalidProgramError("a perceval program needs an input state (input_state=...)")
    payload: dict[str, Any] = {"command": command,
                               "experiment": _serialization().serialize(experiment)}
    if extra.get("max_samples") is not None:
        payload["max_samples"] = int(extra["max_samples"])
    return json.dumps(payload)


def payload(program: Program) -> dict[str, Any]:
    try:
        value = json.loads(program.data)
    except ValueError as exc:
        raise InvalidProgramError(f"a perceval program is JSON: {exc}") from None
    if not isinstance(value, dict) or "experiment" not in value:
        raise InvalidProgramError("a perceval program is a JSON object with 'command' and "
                                  "'experiment' (see qsrv.quantum.engines.perceval_program)")
    command = value.get("command", "sample_count")
    if command not in COMMANDS:
        raise InvalidProgramError(f"unknown Perceval command {command!r}; known: {COMMANDS}")
    return value


def experiment(program: Program) -> Any:
    """A fresh Experiment read from the program (each job gets its own: parameters are set
    on it)."""
    text = payload(program)["experiment"]
    try:
        found = _serialization().deserialize(text)
    except Exception as exc:
        raise InvalidProgramError(f"cannot read the Perceval experiment: "
                                  f"{type(exc).__name__}: {exc}") from None
    if not isinstance(found, pcvl().Experiment):
        raise InvalidProgramError(f"the perceval program's 'experiment' holds a "
                                  f"{type(found).__qualname__}, not an Experiment")
    return found


def free_parameters(exp: Any) -> frozenset[str]:
    return frozenset(name for name, p in exp.get_circuit_parameters().items() if not p.defined)


def set_parameters(exp: Any, values: Mapping[str, Any]) -> None:
    params = exp.get_circuit_parameters()
    for name, value in values.items():
        if name not in params:
            raise InvalidProgramError(f"the Perceval circuit has no parameter {name!r}; it "
                                      f"has {sorted(params)}")
        try:
            params[name].set_value(float(value))
        except Exception as exc:  # out of the parameter's bounds, not a number
            raise InvalidProgramError(f"Perceval parameter {name!r} cannot take {value!r}: "
                                      f"{exc}") from None


def bind(program: Program, variables: Mapping[str, Any]) -> Any:
    """A fresh experiment of the program with `variables` set."""
    exp = experiment(program)
    set_parameters(exp, variables)
    return exp


def iterations(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The payload's iterations (a Perceval Sampler's ``add_iteration``), read by Perceval."""
    raw = data.get("iterator")
    if not raw:
        return []
    try:
        found = _serialization().deserialize(raw)
    except Exception as exc:
        raise InvalidProgramError(f"cannot read the Perceval iterator: "
                                  f"{type(exc).__name__}: {exc}") from None
    if not isinstance(found, list) or not all(isinstance(it, dict) for it in found):
        raise InvalidProgramError("the Perceval iterator is a list of iterations (objects)")
    return found


def describe(program: Program) -> ProgramInfo:
    """Free parameters: the circuit's parameters without a value that not every iteration
    sets (``circuit_params``)."""
    exp = experiment(program)
    free = free_parameters(exp)
    steps = iterations(payload(program))
    if steps:
        free = free - frozenset.intersection(*(frozenset(step.get("circuit_params") or ())
                                                for step in steps))
    return ProgramInfo("perceval", int(exp.circuit_size), free, 1)


def photons(program: Program) -> int:
    state = experiment(program).input_state
    return int(state.n) if state is not None else 0


def _counts(results: Any) -> dict[str, int]:
    if hasattr(results, "items"):  # BSCount (sample_count); BSDistribution (probs) has none
        if type(results).__name__ == "BSDistribution":
            return {}
        return {str(state): int(n) for state, n in results.items()}
    counts: dict[str, int] = {}
    for state in results:  # BSSamples
        key = str(state)
        counts[key] = counts.get(key, 0) + 1
    return counts


def execute(program: Program, shots: int, variables: Mapping[str, Any], *, seed: int | None,
            options: Mapping[str, Any]) -> tuple[dict[str, int], str]:
    """Counts ({"|0,1>": n}; none for ``probs``; ``"<i>:<state>"`` keys for an iterator's
    results) and the serialised result dict."""
    if options:
        raise InvalidProgramError(f"unknown Perceval option(s) {sorted(options)}; none known")
    module = pcvl()
    ser = _serialization()
    data = payload(program)
    exp = bind(program, variables)
    if seed is not None:
        module.random_seed(int(seed))
    processor = module.Processor(BACKEND, exp)
    if data.get("parameters"):
        processor.set_parameters(dict(data["parameters"]))
    sampler = module.algorithm.Sampler(processor, max_shots_per_call=int(shots))
    steps = iterations(data)
    if steps:
        sampler.add_iteration_list(steps)
    command = data.get("command", "sample_count")
    if command == "probs":
        result = sampler.probs()
    else:
        max_samples = int(data.get("max_samples") or shots)
        result = getattr(sampler, command)(max_samples)
    if data.get("job_context") is not None:
        result["job_context"] = data["job_context"]
    if "results_list" in result:
        counts = {f"{i}:{key}": n for i, item in enumerate(result["results_list"])
                  for key, n in _counts(item["results"]).items()}
    else:
        counts = _counts(result["results"])
    return counts, json.dumps(ser.serialize(result))
