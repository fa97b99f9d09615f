"""Resource amounts: parsing targets and worker capacities into exact integers.

Every amount is held as an int so that sums and differences are exact: ``memory`` in bytes,
everything else (``cpu``, ``gpu``, custom tags) in units of 1/10000. ``mem`` is accepted as an
alias of ``memory`` in GiB, as in Quantum Serverless targets. Malformed input raises ConfigError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from qsrv.errors import ConfigError

SCALE = 10_000
DEFAULT_TARGET: Mapping[str, Any] = {"cpu": 1}

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
    "ti": 2**40, "tib": 2**40,
}
_MEMORY_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"resource {name!r}: amount must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"resource {name!r}: amount must be finite and >= 0, got {value!r}")
    return float(value)


def parse_memory(value: Any, *, name: str = "memory") -> int:
    """Bytes from a number of bytes or a string with a unit: "8GB", "512MiB", "1.5G"."""
    if isinstance(value, str):
        match = _MEMORY_RE.match(value)
        if not match:
            raise ConfigError(f"resource {name!r}: cannot read {value!r} as an amount of memory")
        unit = match.group(2).lower()
        if unit not in _UNITS:
            raise ConfigError(
                f"resource {name!r}: unknown memory unit {match.group(2)!r} in {value!r} "
                "(use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB)"
            )
        return int(float(match.group(1)) * _UNITS[unit])
    return int(_number(name, value))


def normalize(
    resources: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Exact integer amounts for a target or a capacity; zero amounts are dropped."""
    if not isinstance(resources, Mapping):
        raise ConfigError(f"a target must be a mapping of resource names to amounts, "
                          f"got {type(resources).__name__}")
    merged = dict(defaults or {})
    if "mem" in resources and "memory" in resources:
        raise ConfigError("give either 'mem' (GiB) or 'memory', not both")
    for key, value in resources.items():
        if key == "mem":
            merged["memory"] = int(_number("mem", value) * 2**30)
        else:
            merged[key] = value
    out: dict[str, int] = {}
    for key, value in merged.items():
        if not isinstance(key, str) or not _NAME_RE.match(key):
            raise ConfigError(f"invalid resource name {key!r}")
        amount = parse_memory(value) if key == "memory" else round(_number(key, value) * SCALE)
        if key == "gpu" and amount > SCALE and amount % SCALE:
            raise ConfigError(f"resource 'gpu': more than one GPU must be a whole number, "
                              f"got {value!r}")
        if amount:
            out[key] = amount
    return out


def normalize_target(target: Mapping[str, Any] | None) -> dict[str, int]:
    """A task's target with the default of one CPU unless the target names ``cpu``."""
    return normalize(target if target is not None else {}, defaults=DEFAULT_TARGET)


def parse_resource_list(text: str) -> dict[str, float]:
    """``"qpu=1,aer=0.5"`` from the command line."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--resources: expected NAME=AMOUNT, got {item!r}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--resources: {value!r} is not a number (in {item!r})") from None
    return out


def fits(need: Mapping[str, int], free: Mapping[str, int]) -> bool:
    return all(free.get(k, 0) >= v for k, v in need.items())


_BINARY_UNITS = (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0))


def format_bytes(n: float, unit: str | None = None, *, trim: bool = True) -> str:
    """``n`` bytes for people: in ``unit`` (B, KiB, MiB, GiB, TiB) or, by default, the largest
    binary unit that keeps the number >= 1; one decimal, dropped when it is zero unless
    ``trim`` is false; bytes are whole. "32 GiB", "24.5 GiB", "4.0 MiB" (trim=False), "100 B".
    """
    for name, shift in _BINARY_UNITS:
        if name == unit or (unit is None and (n >= 1 << shift or name == "B")):
            value = n / (1 << shift)
            if name == "B" or (trim and value == int(value)):
                return f"{value:.0f} {name}"
            return f"{value:.1f} {name}"
    raise ValueError(f"unknown unit {unit!r}: use one of B, KiB, MiB, GiB, TiB")


def display(resources: Mapping[str, int]) -> dict[str, float | str]:
    """Human units: memory as "x.y GiB", the rest as plain numbers."""
    out: dict[str, float | str] = {}
    for key, value in sorted(resources.items()):
        out[key] = format_bytes(value, "GiB", trim=False) if key == "memory" else value / SCALE
    return out
