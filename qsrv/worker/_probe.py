"""What this node can simulate, probed once per machine and cached.

Probing imports qiskit and qiskit-aer (a second of CPU and about 100 MiB) and, with GPUs, runs
a circuit on one. An agent therefore never probes itself: it reads the answer from a cache
file, and only when there is none does it run the probe (`qsrv.quantum.probe_capabilities`)
in a subprocess that exits when done.

The cache lives under the user's cache directory (``$XDG_CACHE_HOME/qsrv``, else
``~/.cache/qsrv``), one file per key: the versions of qiskit, qiskit-aer (and qiskit-aer-gpu),
of the optional engines (perceval-quandela, pulser, pulser-simulation), Python and of the
probe itself; the CPU model and count, the machine's memory and the memory
offered; the GPUs given and what nvidia-smi says of them. A change of any of these is another
key. Files are written atomically (a temporary file renamed over the old one) and a file that
cannot be read or does not match its key is ignored. Agents that start together on one
machine take a lock per key, so one of them probes and the others read its answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from qsrv.worker import _detect

__all__ = ["cache_dir", "cached_capabilities", "probe_key"]

log = logging.getLogger("qsrv.worker")

FORMAT: Final = 1  # of the cache files; a new format is a new key
PROBE_TIMEOUT: Final = 600.0  # seconds; a GPU's first run may compile kernels
_PROBE: Final = ("import json, sys\n"
                 "from qsrv.quantum import probe_capabilities\n"
                 "print(json.dumps(probe_capabilities(int(sys.argv[1]), sys.argv[2:])))\n")
_QUANTUM: Final = Path(__file__).resolve().parent.parent / "quantum"
_PROBE_SOURCES: Final = (_QUANTUM / "_capabilities.py", _QUANTUM / "engines" / "_probe.py",
                         _QUANTUM / "engines" / "_pulser.py")
#: Distributions whose versions change what the probe finds.
_DISTRIBUTIONS: Final = ("qiskit", "qiskit-aer", "qiskit-aer-gpu", "perceval-quandela",
                         "exqalibur", "pulser-core", "pulser-simulation")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qsrv"


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # only when probing

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _probe_digest() -> str:
    """The probe's own source: a probe that changed is not trusted to give the same answer."""
    digest = hashlib.sha256()
    for path in _PROBE_SOURCES:
        try:
            digest.update(path.read_bytes())
        except OSError:
            return ""
    return digest.hexdigest()[:16]


def probe_key(memory_bytes: int, gpu_ids: list[str]) -> dict[str, Any]:
    """Everything the probe's answer depends on (cheap: nothing here imports qiskit)."""
    return {
        "format": FORMAT,
        "probe": _probe_digest(),
        "python": sys.version,
        "prefix": sys.prefix,
        **{dist: _version(dist) for dist in _DISTRIBUTIONS},
        "cpu_model": _detect.cpu_model(),
        "cpu_count": os.cpu_count(),
        "machine_memory": _detect.memory_bytes(),
        "memory": int(memory_bytes),
        "gpu_ids": list(gpu_ids),
        "gpus": _detect.gpu_inventory() if gpu_ids else "",
    }


def _read(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable or corrupt: as if absent
        return None
    if not isinstance(entry, dict) or entry.get("key") != key \
            or not isinstance(entry.get("capabilities"), dict):
        return None
    capabilities: dict[str, Any] = entry["capabilities"]
    return capabilities


def _write(path: Path, key: dict[str, Any], capabilities: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "capabilities": capabilities}, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _run_probe(memory_bytes: int, gpu_ids: list[str]) -> dict[str, Any] | None:
    """The probe, in a subprocess; None when it could not run (said in the log)."""
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE, str(int(memory_bytes)), *gpu_ids],
                             capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not probe this node's simulators: %s", exc)
        return None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        tail = out.stderr.strip().splitlines()[-3:]
        log.warning("could not probe this node's simulators (exit code %s): %s",
                    out.returncode, " | ".join(tail) or "no output")
        return None
    try:
        result = json.loads(lines[-1])
    except ValueError:
        log.warning("the simulator probe printed no JSON: %r", lines[-1][:200])
        return None
    return result if isinstance(result, dict) else None


def cached_capabilities(memory_bytes: int, gpu_ids: list[str], *,
                        directory: Path | None = None) -> dict[str, Any] | None:
    """This node's simulators (`qsrv.quantum.probe_capabilities`'s answer): from the cache,
    else probed in a subprocess and cached. Blocking: call it off the event loop."""
    key = probe_key(memory_bytes, gpu_ids)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = directory or cache_dir()
    path = folder / f"capabilities-{digest}.json"
    found = _read(path, key)
    if found is not None:
        return found
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(folder / f"capabilities-{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:  # no cache here (read-only home...): probe every time
        log.info("no capability cache in %s (%s)", folder, exc)
        return _run_probe(memory_bytes, gpu_ids)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # agents starting together: one probes
        found = _read(path, key)
        if found is not None:
            return found
        result = _run_probe(memory_bytes, gpu_ids)
        if result is not None:
            try:
                _write(path, key, result)
            except OSError as exc:
                log.info("could not cache the capabilities in %s: %s", path, exc)
        return result
    finally:
        os.close(lock)  # releases the lock
