"""Platforms: named offers derived from what the workers advertise (``qsrv.status()``).

Each worker's capability probe (``info["quantum"]``) says what its Aer can do and which
optional engines run there. A platform is one (engine, method, device) with its limits (the
best worker's), its hardware, how many workers offer it and whether one of them has room
now. Pure: a function of a status dict, no cluster call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qsrv._resources import parse_memory

#: Shots per job and circuits per job of each engine's platforms.
MAX_SHOTS = {"aer": 1_000_000, "perceval": 10_000_000, "pulser": 100_000}
MAX_CIRCUITS = {"aer": 1_000, "perceval": 1, "pulser": 1}
#: Platform names in the order `platforms` lists them.
NAMES = ("aer.statevector.cpu", "aer.statevector.gpu", "aer.mps.cpu", "perceval.slos.cpu",
         "pulser.qutip.cpu")
#: (engine, method, device) of each platform name.
PARTS = {name: tuple(name.split(".")) for name in NAMES}


@dataclass(frozen=True, slots=True)
class Hardware:
    """The hardware behind a platform (its best worker's)."""

    vcpus: int
    ram_bytes: int
    gpus: int
    vram_bytes: int


@dataclass(frozen=True, slots=True)
class Platform:
    """A named offer: an engine, method and device that some workers run, with its limits.

    ``max_qubits`` counts qubits (Aer), modes (Perceval) or atoms (Pulser). ``availability``:
    ``available`` (a worker offering it has room for `target` now), ``busy`` (all their
    capacity is in use or reserved) or ``unavailable`` (none of them can hold `target` at
    all). ``target``: what a reservation for this platform asks (``{"cpu": 1}``, plus
    ``{"gpu": 1}`` on a GPU, plus ``{"engine.<engine>": 1}`` when every worker offering it
    advertises that resource). ``device_specs``: for Pulser, the platform device's
    ``to_abstract_repr()`` JSON; else None.
    """

    name: str
    engine: str
    method: str
    device: str
    version: str
    max_qubits: int
    max_shots: int
    max_circuits: int
    hardware: Hardware
    availability: str
    target: dict[str, float] = field(hash=False)
    workers: int
    device_specs: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {"name": self.name, "engine": self.engine, "method": self.method,
                "device": self.device, "version": self.version, "max_qubits": self.max_qubits,
                "max_shots": self.max_shots, "max_circuits": self.max_circuits,
                "hardware": {"vcpus": self.hardware.vcpus, "ram_bytes": self.hardware.ram_bytes,
                             "gpus": self.hardware.gpus,
                             "vram_bytes": self.hardware.vram_bytes},
                "availability": self.availability, "target": dict(self.target),
                "workers": self.workers, "device_specs": self.device_specs}


@dataclass(frozen=True, slots=True)
class _Offer:
    """One worker's offer of one platform."""

    max_qubits: int
    version: str
    device_specs: str | None = None


def _quantum(worker: Mapping[str, Any]) -> dict[str, Any] | None:
    quantum = (worker.get("info") or {}).get("quantum")
    return quantum if isinstance(quantum, dict) and not quantum.get("error") else None


def _aer_limit(quantum: dict[str, Any], device: str, method: str) -> int:
    try:
        return int(quantum["max_qubits"][device][method]["double"])
    except (KeyError, TypeError, ValueError):
        return 0


def offers(worker: Mapping[str, Any]) -> dict[str, _Offer]:
    """{platform name: offer} of one worker of ``qsrv.status()["workers"]``."""
    quantum = _quantum(worker)
    if quantum is None:
        return {}
    found: dict[str, _Offer] = {}
    version = str(quantum.get("aer_version", ""))
    devices = quantum.get("devices") or []
    methods = quantum.get("methods") or []
    if "CPU" in devices and "statevector" in methods:
        found["aer.statevector.cpu"] = _Offer(_aer_limit(quantum, "CPU", "statevector"), version)
    if "GPU" in devices and "statevector" in methods:
        found["aer.statevector.gpu"] = _Offer(_aer_limit(quantum, "GPU", "statevector"), version)
    if "CPU" in devices and "matrix_product_state" in methods:
        found["aer.mps.cpu"] = _Offer(_aer_limit(quantum, "CPU", "matrix_product_state"),
                                      version)
    engines = quantum.get("engines") or {}
    perceval = engines.get("perceval") or {}
    if perceval and not perceval.get("error"):
        found["perceval.slos.cpu"] = _Offer(int(perceval.get("max_modes", 0)),
                                            str(perceval.get("version", "")))
    pulser = engines.get("pulser") or {}
    if pulser and not pulser.get("error"):
        found["pulser.qutip.cpu"] = _Offer(int(pulser.get("max_atoms", 0)),
                                           str(pulser.get("version", "")),
                                           pulser.get("device_specs"))
    return {name: offer for name, offer in found.items() if offer.max_qubits > 0}


def _amount(resources: Mapping[str, Any], name: str) -> float:
    value = resources.get(name, 0)
    if name == "memory":
        return float(parse_memory(value)) if value else 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _fits(resources: Mapping[str, Any], target: Mapping[str, float]) -> bool:
    return all(_amount(resources, k) + 1e-9 >= v for k, v in target.items())


def _slots(resources: Mapping[str, Any], target: Mapping[str, float]) -> int:
    """How many reservations of `target` fit in `resources`."""
    return min(int((_amount(resources, k) + 1e-9) // v) for k, v in target.items() if v > 0)


def _hardware(worker: Mapping[str, Any]) -> Hardware:
    quantum = _quantum(worker) or {}
    total = worker.get("total") or {}
    ram = quantum.get("memory_bytes") or _amount(total, "memory")
    gpus = len(worker.get("gpu_ids") or ()) or int(_amount(total, "gpu"))
    return Hardware(vcpus=int(_amount(total, "cpu")), ram_bytes=int(ram), gpus=gpus,
                    vram_bytes=int(quantum.get("gpu_memory_bytes") or 0))


def _target(engine: str, device: str, capable: list[Mapping[str, Any]]) -> dict[str, float]:
    target = {"cpu": 1.0}
    if device == "gpu":
        target["gpu"] = 1.0
    tag = f"engine.{engine}"
    if capable and all(_amount(w.get("total") or {}, tag) >= 1 for w in capable):
        target[tag] = 1.0
    return target


def _pending(status: Mapping[str, Any], target: Mapping[str, float]) -> int:
    """Reservations waiting for a worker whose target is this platform's."""
    count = 0
    for reservation in status.get("reservations") or ():
        if not isinstance(reservation, Mapping) or reservation.get("status") != "pending":
            continue
        asked = reservation.get("target") or {}
        if isinstance(asked, Mapping) and set(asked) == set(target) and all(
                abs(_amount(asked, k) - v) < 1e-9 for k, v in target.items()):
            count += 1
    return count


def platforms(status: Mapping[str, Any] | None = None, *,
              probe_timeout: float = 15.0) -> list[Platform]:
    """The platforms the cluster offers now, from ``qsrv.status()`` (its workers'
    capabilities and free resources, and its reservations when listed), in `NAMES` order.
    A platform no worker offers is absent. Without `status`, asks the connected cluster,
    waiting up to `probe_timeout` s for workers whose capability probe has not reported."""
    if status is None:
        import qsrv
        from qsrv.quantum import backends

        backends(probe_timeout=probe_timeout)  # waits for the workers' probes
        status = qsrv.status()
    workers = [w for w in status.get("workers") or () if isinstance(w, Mapping)]
    by_name: dict[str, list[tuple[Mapping[str, Any], _Offer]]] = {}
    for worker in workers:
        for name, offer in offers(worker).items():
            by_name.setdefault(name, []).append((worker, offer))
    found = []
    for name in NAMES:
        entries = by_name.get(name)
        if not entries:
            continue
        engine, method, device = PARTS[name]
        capable = [w for w, _ in entries]
        target = _target(engine, device, capable)
        best_worker, best = max(entries, key=lambda e: (
            e[1].max_qubits, _amount(e[0].get("total") or {}, "cpu")))
        holding = [w for w in capable if _fits(w.get("total") or {}, target)]
        room = sum(_slots(w.get("free") or {}, target) for w in holding)
        if not holding:
            availability = "unavailable"
        elif room > _pending(status, target):
            availability = "available"
        else:
            availability = "busy"
        found.append(Platform(
            name=name, engine=engine, method=method, device=device, version=best.version,
            max_qubits=best.max_qubits, max_shots=MAX_SHOTS[engine],
            max_circuits=MAX_CIRCUITS[engine], hardware=_hardware(best_worker),
            availability=availability, target=target, workers=len(entries),
            device_specs=best.device_specs if engine == "pulser" else None))
    return found
