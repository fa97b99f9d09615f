"""Pasqal device types and emulator configurations, mapped onto qsrv's Pulser platforms.

qsrv runs Pulser sequences with ``pulser-simulation`` (QuTiP) on its workers: the platform
``pulser.qutip.cpu``, offered to the SDK as the device type ``EMU_FREE``, Pasqal Cloud's own
name for that emulator. A batch without a device type goes there too. A qsrv Pulser platform
may also be named directly. Every other device type (QPUs, EMU_MPS, EMU_SV, EMU_TN,
EMU_FRESNEL) is refused with a message naming what qsrv offers.

Configuration (``EmuFreeConfig``): ``strict_validation`` is passed to the service (which
checks each sequence against the platform's device before queueing); ``seed`` (an extra key)
seeds each job's sampling; ``with_noise=True``, result types other than ``counter`` and
unknown keys are refused: qsrv's emulator is noiseless and gives counts. A pulser
``backend_configuration`` (what ``RemoteEmuFreeBackend`` sends) is read with pulser and
accepted when it asks for nothing but the final bitstrings of a noiseless run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from qsrv.gateway._errors import InvalidRequestError

__all__ = [
    "EMU_FREE",
    "PULSER_PLATFORM",
    "check_backend_configuration",
    "device_type_of",
    "platform_filter",
    "platform_for",
    "split_configuration",
]

EMU_FREE = "EMU_FREE"
PULSER_PLATFORM = "pulser.qutip.cpu"
_CONFIG_KEYS = frozenset({"strict_validation", "with_noise", "result_types", "seed"})


def device_type_of(platform: str) -> str:
    """The device type the SDK shows for a batch on ``platform``."""
    return EMU_FREE if platform == PULSER_PLATFORM else platform


def _offer(pulser_platforms: Iterable[str]) -> str:
    names = sorted(set(pulser_platforms) | {PULSER_PLATFORM})
    return (f"qsrv offers {EMU_FREE} (pulser-simulation on QuTiP, platform {PULSER_PLATFORM})"
            + (f"; its Pulser platforms: {', '.join(names)}" if len(names) > 1 else ""))


def platform_for(device_type: str | None, pulser_platforms: Iterable[str]) -> str:
    """The qsrv platform a batch asking for ``device_type`` runs on."""
    known = set(pulser_platforms)
    if device_type in (None, "", EMU_FREE):
        return PULSER_PLATFORM
    if device_type in known:
        return device_type
    raise InvalidRequestError(
        f"device type {device_type!r} is not offered by this qsrv cluster: {_offer(known)}")


def platform_filter(device_types: Iterable[str]) -> list[str]:
    """Listing filter: device types as platforms (an unknown one matches nothing)."""
    return [PULSER_PLATFORM if d == EMU_FREE else d for d in device_types]


def split_configuration(configuration: Any) -> tuple[dict[str, Any], int | None]:
    """The configuration the service keeps and the seed of the jobs, or a 400 naming what
    qsrv's emulator cannot honour."""
    if configuration is None:
        return {}, None
    if not isinstance(configuration, Mapping):
        raise InvalidRequestError("configuration must be a JSON object")
    unknown = sorted(set(configuration) - _CONFIG_KEYS)
    if unknown:
        raise InvalidRequestError(
            f"configuration key(s) {', '.join(map(repr, unknown))} not supported: qsrv's "
            f"{EMU_FREE} (pulser-simulation) takes {', '.join(sorted(_CONFIG_KEYS))}")
    if configuration.get("with_noise"):
        raise InvalidRequestError(
            f"with_noise=True is not supported: qsrv's {EMU_FREE} emulator runs noiseless")
    result_types = configuration.get("result_types")
    if result_types not in (None, [], ["counter"]):
        raise InvalidRequestError(
            f"result_types {result_types!r} not supported: qsrv's {EMU_FREE} gives 'counter'")
    strict = configuration.get("strict_validation", False)
    if not isinstance(strict, bool):
        raise InvalidRequestError("strict_validation must be true or false")
    seed = configuration.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 2**63):
        raise InvalidRequestError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")
    kept: dict[str, Any] = {"strict_validation": strict}
    if seed is not None:
        kept["seed"] = seed
    return kept, seed


def check_backend_configuration(text: Any) -> None:
    """Accept a pulser ``EmulationConfig`` (abstract representation) asking only for the
    final bitstrings of a noiseless run; refuse anything else with the reason."""
    if text in (None, ""):
        return
    if not isinstance(text, str):
        raise InvalidRequestError("backend_configuration must be a string (pulser's JSON)")
    try:
        from pulser.backend import BitStrings, EmulationConfig
    except ImportError:
        raise InvalidRequestError(
            "backend_configuration needs pulser on the gateway (pip install 'qsrv[pulser]')"
        ) from None
    try:
        config = EmulationConfig.from_abstract_repr(text)
    except Exception as exc:
        raise InvalidRequestError(f"backend_configuration is not pulser's: {exc}") from None
    observables = config.observables
    if any(not isinstance(obs, BitStrings) for obs in observables):
        raise InvalidRequestError(
            f"backend_configuration asks for observables qsrv's {EMU_FREE} does not give "
            "(only bitstrings)")
    noise: tuple[Any, ...] = tuple(
        getattr(getattr(config, "noise_model", None), "noise_types", None) or ())
    if noise:
        raise InvalidRequestError(
            f"backend_configuration asks for noise {noise}: qsrv's "
            f"{EMU_FREE} emulator runs noiseless")
    options = getattr(config, "_backend_options", {})
    for name in ("initial_state", "interaction_matrix"):
        if options.get(name) is not None:
            raise InvalidRequestError(f"backend_configuration {name} is not supported")
    if options.get("with_modulation"):
        raise InvalidRequestError("backend_configuration with_modulation is not supported")
