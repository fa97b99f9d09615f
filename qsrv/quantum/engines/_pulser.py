"""Pulser sequences on ``pulser-simulation``'s QutipEmulator.

A ``pulser`` program is ``Sequence.to_abstract_repr()``; it is read back with
``Sequence.from_abstract_repr`` (once per executor and program), built with the job's
variables (``Sequence.build(**variables)``) and emulated with
``QutipEmulator.from_sequence(built).run().sample_final_state(shots)``, numpy's generator
seeded first (Pulser samples with it), so a job equals that emulation run directly with the
same seed. The platform's device is Pulser's ``AnalogDevice`` limited to what the emulator
holds (`MAX_ATOMS`), under its own name, served as Pulser's abstract representation.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from qsrv.errors import InvalidProgramError
from qsrv.quantum.engines._cache import Lru
from qsrv.quantum.engines._program import Program, ProgramInfo

#: Atoms the QutipEmulator handles in reasonable time (its state grows as 2**atoms).
MAX_ATOMS = 12
#: Runs (shots) per job the emulator platform's device accepts.
MAX_RUNS = 100_000
DEVICE_NAME = "QsrvQutipEmulator"
#: Options a job may give (QutipEmulator.from_sequence's).
OPTIONS = frozenset({"sampling_rate", "with_modulation"})

_sequences: Lru[str, Any] = Lru(16)
_devices: dict[str, Any] = {}


def pulser() -> Any:
    return importlib.import_module("pulser")


def platform_device() -> Any:
    """The device of the emulator platform (built once per process)."""
    found = _devices.get("")
    if found is None:
        import dataclasses

        analog = importlib.import_module("pulser.devices").AnalogDevice
        found = _devices[""] = dataclasses.replace(
            analog, name=DEVICE_NAME, max_atom_num=min(analog.max_atom_num or MAX_ATOMS,
                                                       MAX_ATOMS),
            max_runs=MAX_RUNS)
    return found


def device_from_specs(specs: str) -> Any:
    """A Pulser device from its abstract representation (cached by text)."""
    key = hashlib.sha256(specs.encode()).hexdigest()
    found = _devices.get(key)
    if found is None:
        deserializer = importlib.import_module("pulser.json.abstract_repr.deserializer")
        try:
            found = _devices[key] = deserializer.deserialize_device(specs)
        except Exception as exc:
            raise InvalidProgramError(f"cannot read the platform's Pulser device: {exc}") \
                from None
    return found


def sequence(program: Program) -> Any:
    key = hashlib.sha256(program.data.encode()).hexdigest()
    found = _sequences.get(key)
    if found is not None:
        return found
    try:
        found = pulser().Sequence.from_abstract_repr(program.data)
    except Exception as exc:  # pulser's validation (jsonschema) and its own errors
        raise InvalidProgramError(f"cannot read the Pulser sequence: "
                                  f"{type(exc).__name__}: {_short(exc)}") from None
    return _sequences.put(key, found)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else ""


#: The variable that places a mappable register's qubits on its layout's traps
#: (``Sequence.build(qubits={"q0": 3, ...})``).
QUBITS = "qubits"


def atoms(seq: Any) -> int:
    return len(seq.get_register(include_mappable=True).qubit_ids)


def describe(program: Program) -> ProgramInfo:
    """Parameters: the declared variables, and ``qubits`` when the register is mappable."""
    seq = sequence(program)
    names = set(seq.declared_variables)
    if seq.is_register_mappable():
        names.add(QUBITS)
    return ProgramInfo("pulser", atoms(seq), frozenset(names), 1)


def _channel_ids(program: Program) -> dict[str, str]:
    """{declared name: channel id} as the abstract representation records them."""
    try:
        channels = json.loads(program.data).get("channels") or {}
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in channels.items()} if isinstance(channels, dict) else {}


def device_problem(program: Program, device: Any) -> str | None:
    """Why the sequence cannot run on `device` (atoms, channels, register, the rest of
    Pulser's own checks), or None."""
    seq = sequence(program)
    count = atoms(seq)
    if device.max_atom_num is not None and count > device.max_atom_num:
        return (f"the sequence has {count} atoms; device {device.name} holds at most "
                f"{device.max_atom_num}")
    for name, channel_id in _channel_ids(program).items():
        if channel_id not in device.channels:
            return (f"the sequence uses channel {channel_id!r} (declared as {name!r}), which "
                    f"device {device.name} lacks (it has {sorted(device.channels)})")
    try:
        if seq.is_register_mappable():
            device.validate_layout(seq.get_register(include_mappable=True).layout)
        else:
            device.validate_register(seq.register)
    except Exception as exc:
        return f"the register is not valid on device {device.name}: {_short(exc)}"
    try:
        with _quiet():
            seq.switch_device(device)
    except Exception as exc:
        return f"the sequence is not valid on device {device.name}: {_short(exc)}"
    return None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _numpy_seed(seed: int | None) -> Iterator[None]:
    """numpy's global generator seeded with `seed` inside, as it was outside."""
    import numpy as np

    if seed is None:
        yield
        return
    saved = np.random.get_state()
    np.random.seed(int(seed) % (1 << 32))
    try:
        yield
    finally:
        np.random.set_state(saved)


def build(program: Program, variables: Mapping[str, Any]) -> Any:
    """The sequence built with `variables` (Pulser checks the values: amplitudes within the
    channel's limits, a mappable register's traps...)."""
    seq = sequence(program)
    if not (seq.is_parametrized() or seq.is_register_mappable()):
        return seq
    try:
        with _quiet():
            return seq.build(**dict(variables))
    except Exception as exc:
        raise InvalidProgramError(f"cannot build the Pulser sequence with these variables: "
                                  f"{_short(exc)}") from None


def execute(program: Program, shots: int, variables: Mapping[str, Any], *, seed: int | None,
            options: Mapping[str, Any]) -> dict[str, int]:
    """Bitstring counts of `shots` samples of the final state."""
    unknown = set(options) - OPTIONS
    if unknown:
        raise InvalidProgramError(f"unknown Pulser option(s) {sorted(unknown)}; known: "
                                  f"{sorted(OPTIONS)}")
    built = build(program, variables)
    emulator = importlib.import_module("pulser_simulation").QutipEmulator
    with _numpy_seed(seed), _quiet():
        results = emulator.from_sequence(built, **dict(options)).run()
        sampled = results.sample_final_state(int(shots))
    return {str(bits): int(n) for bits, n in sampled.items()}
