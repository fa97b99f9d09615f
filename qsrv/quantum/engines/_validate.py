"""Strict validation: a job is refused, with its reason, before it queues."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from qsrv.errors import InvalidProgramError
from qsrv.quantum.engines._platforms import Platform
from qsrv.quantum.engines._program import Program, ProgramInfo, describe

#: What `max_qubits` counts on each engine.
UNITS = {"aer": "qubits", "perceval": "modes", "pulser": "atoms"}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_variables(info: ProgramInfo, variables: Mapping[str, Any]) -> None:
    """Every free parameter bound, nothing else, and numbers only (a Pulser variable of
    size > 1 takes a list of numbers)."""
    if not isinstance(variables, Mapping):
        raise InvalidProgramError(f"variables are a mapping of names to values, got "
                                  f"{type(variables).__name__}")
    missing = sorted(info.parameters - set(variables))
    if missing:
        raise InvalidProgramError(f"missing variable(s) {missing}: the program's parameters "
                                  f"are {sorted(info.parameters)}")
    unknown = sorted(set(variables) - info.parameters)
    if unknown:
        known = sorted(info.parameters)
        raise InvalidProgramError(f"unknown variable(s) {unknown}: the program's parameters "
                                  f"are {known}" if known else
                                  f"unknown variable(s) {unknown}: the program has no "
                                  f"parameters")
    for name, value in variables.items():
        if info.engine == "pulser" and name == "qubits":  # a mappable register's placement
            if not (isinstance(value, Mapping) and value and all(
                    isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                    for k, v in value.items())):
                raise InvalidProgramError(f"variable 'qubits' maps qubit ids to trap numbers "
                                          f"(a mappable register), got {value!r}")
            continue
        listed = info.engine == "pulser" and isinstance(value, list | tuple)
        if not (_is_number(value) or (listed and value and all(_is_number(v) for v in value))):
            raise InvalidProgramError(f"variable {name!r} must be a number, got {value!r}")


def check_shots(shots: Any) -> None:
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
        raise InvalidProgramError(f"shots must be a positive integer, got {shots!r}")


def check_options(engine: str, options: Mapping[str, Any] | None) -> None:
    """Refuse engine options `execute` would refuse: a name the engine does not take (Aer:
    its backend and run options; Pulser: ``sampling_rate``, ``with_modulation``; Perceval:
    none), or Aer's ``memory`` that is not a bool."""
    if options is None:
        return
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise InvalidProgramError(f"engine options map names to values, got {options!r}")
    known: frozenset[str] = frozenset()
    if engine == "aer":
        from qsrv.quantum.engines import _aer

        known = _aer.OPTIONS
    elif engine == "pulser":
        from qsrv.quantum.engines import _pulser

        known = _pulser.OPTIONS
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidProgramError(
            f"unknown {engine} option(s) {unknown}; "
            + (f"known: {sorted(known)}" if known else "it takes none"))
    if engine == "aer" and not isinstance(options.get("memory", False), bool):
        raise InvalidProgramError(f"the Aer option memory must be true or false, got "
                                  f"{options['memory']!r}")


def check(platform: Platform, program: Program, shots: int,
          variables: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> None:
    """Refuse (`InvalidProgramError` with the reason) a job that `platform` cannot run: the
    wrong engine, a program its engine cannot read, too wide, too many shots or circuits, a
    variable missing, unknown or not a number, engine options it does not take, a Pulser
    sequence the platform's device refuses (atoms, channels, register), a Perceval input with
    more photons than the platform takes."""
    if program.engine != platform.engine:
        raise InvalidProgramError(
            f"a {program.kind} program runs on the {program.engine} engine; platform "
            f"{platform.name} runs {platform.engine} programs")
    check_options(platform.engine, options)
    check_shots(shots)
    if shots > platform.max_shots:
        raise InvalidProgramError(f"{shots} shots is over platform {platform.name}'s maximum "
                                  f"of {platform.max_shots} per job")
    info = describe(program)
    if info.circuits > platform.max_circuits:
        raise InvalidProgramError(f"{info.circuits} circuits is over platform "
                                  f"{platform.name}'s maximum of {platform.max_circuits} per "
                                  f"job")
    unit = UNITS[platform.engine]
    if info.width > platform.max_qubits:
        raise InvalidProgramError(f"the program has {info.width} {unit}; platform "
                                  f"{platform.name} takes at most {platform.max_qubits}")
    check_variables(info, variables)
    if platform.engine == "perceval":
        from qsrv.quantum.engines import _perceval, _probe

        photons = _perceval.photons(program)
        if photons > _probe.PERCEVAL_MAX_PHOTONS:
            raise InvalidProgramError(f"the input state has {photons} photons; platform "
                                      f"{platform.name} takes at most "
                                      f"{_probe.PERCEVAL_MAX_PHOTONS}")
        _perceval.bind(program, variables)  # values within the parameters' bounds
    elif platform.engine == "pulser":
        from qsrv.quantum.engines import _pulser

        if platform.device_specs:
            problem = _pulser.device_problem(program, _pulser.device_from_specs(
                platform.device_specs))
            if problem:
                raise InvalidProgramError(problem)
        _pulser.build(program, variables)  # the values as Pulser checks them
