"""Which optional engines this node can run: Perceval's SLOS backend, Pulser's emulator.

Run inside the capability probe (a subprocess of the worker agent, cached per machine): each
engine is imported and runs one tiny job, so a broken install is reported, not advertised.
An engine that is missing or broken is ``{"error": "..."}`` and gets no platform.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("qsrv.quantum")

#: The photonic platform's limits (SLOS's memory grows with modes and photons together).
PERCEVAL_MAX_MODES = 24
PERCEVAL_MAX_PHOTONS = 12


def _version(dist: str) -> str:
    from importlib.metadata import version

    return str(version(dist))


def _perceval() -> dict[str, Any]:
    pcvl = importlib.import_module("perceval")
    processor = pcvl.Processor("SLOS", pcvl.Circuit(2) // pcvl.BS.H())
    processor.with_input(pcvl.BasicState([1, 0]))
    result = pcvl.algorithm.Sampler(processor, max_shots_per_call=10).probs()
    if not result.get("results"):
        raise RuntimeError("a SLOS test run gave no probabilities")
    return {"version": str(pcvl.__version__), "backends": ["SLOS"],
            "max_modes": PERCEVAL_MAX_MODES, "max_photons": PERCEVAL_MAX_PHOTONS}


def _pulser() -> dict[str, Any]:
    import warnings

    from qsrv.quantum.engines import _pulser

    pulser = importlib.import_module("pulser")
    emulator = importlib.import_module("pulser_simulation").QutipEmulator
    device = _pulser.platform_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = pulser.Sequence(pulser.Register.from_coordinates([(0, 0)], prefix="q"), device)
        seq.declare_channel("ryd", "rydberg_global")
        seq.add(pulser.Pulse.ConstantPulse(100, 1.0, 0.0, 0.0), "ryd")
        emulator.from_sequence(seq).run().sample_final_state(1)
    return {"version": str(pulser.__version__), "simulation_version": _version("pulser-simulation"),
            "emulator": "QutipEmulator", "max_atoms": int(device.max_atom_num),
            "max_runs": int(device.max_runs), "device": str(device.name),
            "device_specs": str(device.to_abstract_repr())}


_PROBES: dict[str, tuple[Callable[[], dict[str, Any]], str]] = {
    "perceval": (_perceval, "perceval-quandela"),
    "pulser": (_pulser, "pulser and pulser-simulation"),
}


def probe_engines() -> dict[str, dict[str, Any]]:
    """``{"perceval": {...}, "pulser": {...}}``: each engine's version and limits, or
    ``{"error": why}`` when it is not installed or does not run here."""
    found: dict[str, dict[str, Any]] = {}
    for name, (probe, packages) in _PROBES.items():
        try:
            found[name] = probe()
        except ImportError as exc:
            found[name] = {"error": f"{packages} not installed ({exc}); "
                                    f"pip install 'qsrv[{name}]'"}
        except Exception as exc:
            message = f"{name} is installed but a test run failed: {type(exc).__name__}: {exc}"
            log.warning("%s", message)
            found[name] = {"error": message}
    return found
