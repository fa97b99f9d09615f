"""Placement by need: what a circuit asks of a worker, and whether any worker can give it.

A simulation's need is a task target — ``{"cpu": 1, "memory": state_bytes}`` on a CPU,
``{"cpu": 1, "gpu": 1}`` on a GPU — so the scheduler never places it where it does not fit.
Before anything is submitted, the need is compared with the workers' totals and advertised
capabilities (``qsrv.status()``); a need that no worker can ever meet raises
`QuantumPlacementError` at once, with the reason, instead of waiting forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qsrv._resources import format_bytes, parse_memory
from qsrv._retry import poll_until
from qsrv.errors import QuantumPlacementError
from qsrv.quantum._capabilities import (
    DEVICES,
    GPU_METHODS,
    PRECISIONS,
    max_qubits,
    state_bytes,
)


@dataclass(frozen=True, slots=True)
class Need:
    """What one simulation asks of a worker."""

    num_qubits: int
    method: str
    device: str
    precision: str

    @property
    def bytes(self) -> int:
        return state_bytes(self.num_qubits, self.method, self.precision)

    def target(self) -> dict[str, Any]:
        if self.device == "GPU":
            return {"cpu": 1, "gpu": 1}
        return {"cpu": 1, "memory": max(1, self.bytes)}

    def describe(self) -> str:
        return (f"{self.num_qubits} qubits need {format_bytes(self.bytes)} "
                f"({self.method}, {self.precision}, {self.device})")


def need_of(num_qubits: int, backend_options: dict[str, Any]) -> Need:
    """The need of a circuit of `num_qubits` simulated with these AerSimulator options."""
    method = str(backend_options.get("method", "automatic"))
    device = str(backend_options.get("device", "CPU")).upper()
    precision = str(backend_options.get("precision", "double"))
    if device not in DEVICES:
        raise QuantumPlacementError(f"device must be one of {DEVICES}, got {device!r}")
    if precision not in PRECISIONS:
        raise QuantumPlacementError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    state_bytes(0, method, precision)  # an unknown method raises ValueError here
    return Need(num_qubits, method, device, precision)


# ---- the cluster as seen from the driver -------------------------------------------------------
def _worker_memory(worker: dict[str, Any]) -> int:
    quantum = worker.get("info", {}).get("quantum") or {}
    if "memory_bytes" in quantum:
        return int(quantum["memory_bytes"])
    total = worker.get("total", {}).get("memory")
    return parse_memory(total) if total is not None else 0


def _quantum(worker: dict[str, Any]) -> dict[str, Any] | None:
    info = worker.get("info") or {}
    quantum = info.get("quantum")
    return quantum if isinstance(quantum, dict) else None


#: Workers (address-independent: id and name) that never reported capabilities within a wait;
#: later calls do not wait for them again.
_silent: set[tuple[int, str]] = set()


def cluster_workers(status_fn: Callable[[], dict[str, Any]] | None = None,
                    probe_timeout: float = 15.0) -> list[dict[str, Any]]:
    """The workers of ``qsrv.status()``, waiting up to `probe_timeout` s for every worker's
    capability probe (it runs after a worker registers, off its event loop). A worker that
    stays silent (no qsrv.quantum there) is waited for once, then counted as CPU-only with
    its memory."""
    if status_fn is None:
        import qsrv

        status_fn = qsrv.status
    workers: list[dict[str, Any]] = []
    waiting: list[tuple[int, str]] = []

    def settled() -> bool:
        nonlocal workers, waiting
        workers = list(status_fn()["workers"])
        waiting = [(w["id"], w["name"]) for w in workers if _quantum(w) is None]
        return bool(workers) and not set(waiting) - _silent

    if not poll_until(settled, probe_timeout, 0.05):
        _silent.update(waiting)
    return workers


def _device_limit(worker: dict[str, Any], need: Need) -> tuple[int | None, str]:
    """Bytes this worker can hold for `need` (None: it cannot run it at all), or why not."""
    quantum = _quantum(worker)
    label = f"worker {worker['id']} ({worker['name']})"
    if quantum is not None and quantum.get("error"):
        return None, f"{label}: {quantum['error']}"
    if need.device == "GPU":
        if not worker.get("total", {}).get("gpu"):
            return None, f"{label} has no GPUs"
        if quantum is None or "GPU" not in quantum.get("devices", []):
            why = "; ".join(quantum.get("warnings", [])) if quantum else "no capabilities yet"
            return None, f"{label}'s Aer cannot use a GPU ({why or 'no GPU support'})"
        if need.method not in GPU_METHODS and need.method != "automatic":
            return None, f"{label}: method {need.method!r} does not run on a GPU"
        gpu_memory = quantum.get("gpu_memory_bytes")
        return int(gpu_memory) if gpu_memory else _worker_memory(worker), ""
    if quantum is not None and need.method not in quantum.get("methods", [need.method]):
        return None, f"{label}'s Aer has no method {need.method!r}"
    return _worker_memory(worker), ""


def check_placement(needs: list[Need], workers: list[dict[str, Any]]) -> None:
    """Raise QuantumPlacementError naming the first need that no worker can meet."""
    if not workers:
        raise QuantumPlacementError("no worker is connected to run circuits")
    for need in sorted(set(needs), key=lambda n: -n.bytes):
        limits = [_device_limit(w, need) for w in workers]
        usable = [size for size, _ in limits if size is not None]
        if not usable:
            reasons = "; ".join(why for _, why in limits)
            raise QuantumPlacementError(
                f"no worker can run {need.method} circuits on device={need.device!r}: {reasons}")
        largest = max(usable)
        if need.bytes > largest:
            limit = max_qubits(largest, need.method, need.precision)
            raise QuantumPlacementError(
                f"{need.describe()}; largest worker holds {format_bytes(largest)} "
                f"(at most {limit} qubits)")


# ---- qsrv.backends() ---------------------------------------------------------------------------
def backends(*, probe_timeout: float = 15.0) -> list[dict[str, Any]]:
    """The simulators the cluster offers, one entry per (method, device, precision).

    Each entry: ``name`` (Aer's, e.g. ``aer_simulator_statevector_gpu``), ``method``,
    ``device``, ``precision``, ``max_qubits`` (the largest over its workers), ``workers`` (ids of
    the workers offering it) and ``max_qubits_by_worker`` ({worker id: qubits}). Waits up to
    `probe_timeout` s for workers whose capability probe has not reported yet.
    """
    return describe_backends(cluster_workers(probe_timeout=probe_timeout))


def describe_backends(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`backends` of these workers (as ``qsrv.status()["workers"]`` lists them)."""
    entries: dict[tuple[str, str, str], dict[str, Any]] = {}
    for worker in workers:
        quantum = _quantum(worker)
        if quantum is None:
            continue
        for device, methods in sorted(quantum.get("max_qubits", {}).items()):
            for method, by_precision in methods.items():
                for precision, qubits in by_precision.items():
                    key = (method, device, precision)
                    suffix = "_gpu" if device == "GPU" else ""
                    entry = entries.setdefault(key, {
                        "name": f"aer_simulator_{method}{suffix}", "method": method,
                        "device": device, "precision": precision, "max_qubits": 0,
                        "workers": [], "max_qubits_by_worker": {}})
                    entry["max_qubits"] = max(entry["max_qubits"], int(qubits))
                    entry["workers"].append(worker["id"])
                    entry["max_qubits_by_worker"][worker["id"]] = int(qubits)
    return [entries[k] for k in sorted(entries, key=lambda k: (k[1], k[0], k[2]))]
