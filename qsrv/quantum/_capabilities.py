"""What a node can simulate: Aer's devices, methods and precisions, and memory → qubits.

Pure arithmetic (`state_bytes`, `max_qubits`) plus one probe (`probe_capabilities`) that a
worker agent runs once, in a thread, after registering. The probe's result is plain data
(str, int, list, dict) so that it travels as worker info and shows in ``qsrv.status()``.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from typing import Any

from qsrv._resources import format_bytes as format_bytes  # where the tests look for it

log = logging.getLogger("qsrv.quantum")

#: Bytes per complex amplitude.
PRECISION_BYTES = {"double": 16, "single": 8}
PRECISIONS = ("double", "single")
DEVICES = ("CPU", "GPU")

#: Methods whose memory grows as (2**n)**exponent amplitudes.
EXPONENTIAL_METHODS = {"statevector": 1, "density_matrix": 2, "unitary": 2, "superop": 4,
                       "tensor_network": 1}
#: Methods whose size is not set by memory; Aer's own qubit limits for them.
FIXED_LIMITS = {"stabilizer": 10_000, "matrix_product_state": 63, "extended_stabilizer": 63}
#: Methods Aer can run on a GPU.
GPU_METHODS = ("statevector", "density_matrix", "unitary", "tensor_network")


def _method_for_memory(method: str) -> str:
    # "automatic" may pick statevector for any circuit: count it as statevector (the
    # conservative choice; stabilizer circuits then look bigger than they are).
    return "statevector" if method == "automatic" else method


def state_bytes(num_qubits: int, method: str = "statevector", precision: str = "double") -> int:
    """Bytes the simulator state of `num_qubits` qubits takes with `method` and `precision`.

    ``statevector``: 2**n amplitudes of 16 bytes (double) or 8 (single) — 31 qubits in double
    take 32 GiB; ``density_matrix``/``unitary``: 4**n; ``superop``: 16**n; ``automatic`` counts
    as ``statevector``. Stabilizer, matrix-product-state and extended-stabilizer states grow
    polynomially; they are given a small estimate (the stabilizer tableau's bits).
    """
    if num_qubits < 0:
        raise ValueError(f"num_qubits must be >= 0, got {num_qubits}")
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    method = _method_for_memory(method)
    amp = PRECISION_BYTES[precision]
    if method in EXPONENTIAL_METHODS:
        return amp << (num_qubits * EXPONENTIAL_METHODS[method])
    if method in FIXED_LIMITS:
        n = max(num_qubits, 1)
        return max(1, (2 * n) * (2 * n + 1) // 8)
    raise ValueError(f"unknown simulation method {method!r}; known: "
                     f"{sorted(['automatic', *EXPONENTIAL_METHODS, *FIXED_LIMITS])}")


def max_qubits(memory_bytes: int, method: str = "statevector", precision: str = "double") -> int:
    """The largest number of qubits whose state fits in `memory_bytes` (0 when none does)."""
    method = _method_for_memory(method)
    if method in FIXED_LIMITS:
        return FIXED_LIMITS[method]
    if method not in EXPONENTIAL_METHODS:
        raise ValueError(f"unknown simulation method {method!r}")
    amps = memory_bytes // PRECISION_BYTES[precision]
    if amps < 1:
        return 0
    return math.floor(math.log2(amps)) // EXPONENTIAL_METHODS[method]


def gpu_memory_bytes(gpu_ids: list[str]) -> int | None:
    """Memory of the smallest of these NVIDIA GPUs (nvidia-smi), None when it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if smi is None or not gpu_ids:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=index,memory.total",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    sizes = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1]) << 20  # MiB
    found = [sizes[g] for g in gpu_ids if g in sizes]
    return min(found) if found else None


def _aer_gpu_works() -> tuple[bool, str]:
    """Whether Aer can run on a GPU here, by running one: a build without CUDA, a missing
    driver or no device all fail, and Aer never silently falls back to the CPU for this."""
    from qiskit import QuantumCircuit  # type: ignore[import-untyped]
    from qiskit_aer import AerSimulator  # type: ignore[import-untyped]

    try:
        if "GPU" not in AerSimulator().available_devices():
            return False, "this qiskit-aer has no GPU support (install qiskit-aer-gpu)"
        circuit = QuantumCircuit(1)
        circuit.h(0)
        circuit.measure_all()
        result = AerSimulator(method="statevector", device="GPU").run(circuit, shots=1).result()
        if not result.success:
            return False, f"a GPU test run failed: {result.status}"
    except Exception as exc:
        return False, f"a GPU test run failed: {exc}"
    return True, ""


def _limits(memory: int, methods: list[str]) -> dict[str, dict[str, int]]:
    return {m: {p: max_qubits(memory, m, p) for p in PRECISIONS} for m in methods}


def probe_capabilities(memory_bytes: int, gpu_ids: list[str]) -> dict[str, Any]:
    """What this node's qiskit-aer can simulate, as plain data.

    ``{"aer_version", "qiskit_version", "devices": ["CPU", ("GPU")], "methods": [...],
    "precisions": ["double", "single"], "memory_bytes", "gpu_ids", "gpu_memory_bytes",
    "max_qubits": {device: {method: {precision: n}}}, "warnings": [...]}``. "GPU" is listed
    only when Aer really ran a circuit on one; GPUs the worker was given (``--gpus``) that Aer
    cannot use are a logged warning and an entry in ``warnings``. Without qiskit-aer the
    result is ``{"error": ...}``, ``devices`` empty. ``engines``: the optional engines
    (``perceval``, ``pulser``), each its version and limits or ``{"error": ...}``
    (`qsrv.quantum.engines` derives platforms from them).
    """
    from qsrv.quantum.engines import probe_engines

    warnings: list[str] = []
    engines = probe_engines()
    try:
        import qiskit
        import qiskit_aer
        from qiskit_aer import AerSimulator
    except ImportError as exc:
        message = f"qiskit-aer is not installed on this node ({exc})"
        log.warning("%s; it will not be given circuits", message)
        return {"error": message, "devices": [], "methods": [], "precisions": [],
                "memory_bytes": int(memory_bytes), "gpu_ids": list(gpu_ids),
                "max_qubits": {}, "warnings": [message], "engines": engines}
    methods = [m for m in AerSimulator().available_methods() if m != "automatic"]
    devices = ["CPU"]
    gpu_memory = None
    max_q: dict[str, Any] = {"CPU": _limits(int(memory_bytes),
                                            [m for m in methods if m != "tensor_network"])}
    if gpu_ids:
        ok, why = _aer_gpu_works()
        if ok:
            devices.append("GPU")
            gpu_memory = gpu_memory_bytes(list(gpu_ids))
            # Unknown GPU memory: the host's is an upper bound Aer will enforce itself.
            max_q["GPU"] = _limits(gpu_memory or int(memory_bytes),
                                   [m for m in GPU_METHODS if m in methods or m == "statevector"])
        else:
            message = (f"{len(gpu_ids)} GPU(s) given to this worker ({','.join(gpu_ids)}) but "
                       f"Aer cannot use them: {why}; device='GPU' circuits will not run here, "
                       f"and nothing falls back to the CPU")
            log.warning("%s", message)
            warnings.append(message)
    return {
        "aer_version": str(qiskit_aer.__version__),
        "qiskit_version": str(qiskit.__version__),
        "devices": devices,
        "methods": ["automatic", *methods],
        "precisions": list(PRECISIONS),
        "memory_bytes": int(memory_bytes),
        "gpu_ids": list(gpu_ids),
        "gpu_memory_bytes": gpu_memory,
        "max_qubits": max_q,
        "warnings": warnings,
        "engines": engines,
    }
