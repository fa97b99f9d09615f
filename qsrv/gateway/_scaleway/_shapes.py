"""qsrv's records in the shapes of Scaleway QaaS ``v1alpha1``, as its clients parse them.

- Times are RFC 3339 in UTC with microseconds (``2022-03-22T12:34:56.123456Z``); durations
  are seconds with an ``s`` (``"1200s"``).
- A field with no value is left out rather than sent as ``null``: CUDA-Q reads every string
  field of these objects as a string (``null`` fails it), the Python clients and Perceval
  treat a missing field as unset.
- Platform ids are stable UUIDs derived from the platform's name (the clients pass ids back);
  the name is accepted wherever an id is.
- Status names: sessions ``starting|running|stopping|stopped`` (qsrv's own); jobs
  ``waiting|running|completed|error|cancelled``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from qsrv.gateway._quantum import QJobRecord, QStatus, SessionRecord, SessionStatus

if TYPE_CHECKING:
    from qsrv.gateway._scaleway._store import JobNote, ModelRecord, SessionNote
    from qsrv.quantum.engines import Platform

__all__ = [
    "ENGINES",
    "duration",
    "job_shape",
    "job_status",
    "model_shape",
    "platform_id",
    "platform_shape",
    "rfc3339",
    "session_shape",
]

# The engines this door runs, and how Scaleway describes each platform's kind.
ENGINES: dict[str, dict[str, str]] = {
    "aer": {"provider_name": "qsrv", "backend_name": "aer", "technology": "general_purpose"},
    # Perceval's Scaleway session looks platforms up under provider "quandela" by default.
    "perceval": {"provider_name": "quandela", "backend_name": "slos", "technology": "photonic"},
}
_NAMESPACE = uuid.UUID("6a0e5c1e-7f39-4f43-9a52-6c1f4e0c2b55")  # qsrv's Scaleway platform ids
_AVAILABILITY = {"available": "available", "busy": "scarce", "unavailable": "shortage"}
_PERCEVAL_COMMANDS = ["probs", "sample_count", "samples"]


def rfc3339(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def duration(seconds: float | None) -> str | None:
    if seconds is None or math.isinf(seconds):
        return None
    return f"{seconds:g}s" if seconds != int(seconds) else f"{int(seconds)}s"


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def platform_id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, name))


def _price() -> dict[str, Any]:
    return {"currency_code": "EUR", "units": 0, "nanos": 0}


def _metadata(platform: Platform) -> str:
    """The platform's specs as Perceval reads them (``metadata``, JSON text); the others get
    the same text and ignore it."""
    if platform.engine == "perceval":
        specs: dict[str, Any] = {
            "available_commands": _PERCEVAL_COMMANDS,
            "constraints": {"max_mode_count": platform.max_qubits,
                            "max_photon_count": platform.max_qubits},
            "pcvl_version": platform.version,
            "description": f"Perceval {platform.method.upper()} on qsrv ({platform.device})",
            "parameters": {},
        }
        return json.dumps(specs)
    return json.dumps({"engine": platform.engine, "method": platform.method,
                       "device": platform.device})


def platform_shape(platform: Platform) -> dict[str, Any]:
    kind = ENGINES[platform.engine]
    hardware = platform.hardware
    return {
        "id": platform_id(platform.name),
        "version": platform.version,
        "name": platform.name,
        "provider_name": kind["provider_name"],
        "backend_name": kind["backend_name"],
        "type": "simulator",
        "technology": kind["technology"],
        "max_qubit_count": platform.max_qubits,
        "max_shot_count": platform.max_shots,
        "max_circuit_count": platform.max_circuits,
        "availability": _AVAILABILITY.get(platform.availability, "unknown_availability"),
        "metadata": _metadata(platform),
        "price_per_hour": _price(),
        "price_per_shot": _price(),
        "price_per_circuit": _price(),
        "hardware": {
            "name": f"{platform.device} x{platform.workers}",
            "vcpus": int(hardware.vcpus),
            "gpus": int(hardware.gpus),
            "gpus_network": "",
            "ram": int(hardware.ram_bytes),
            "vram": int(hardware.vram_bytes),
        },
        "description": f"{platform.engine} {platform.method} on {platform.device} "
                       f"({platform.workers} worker(s) of this cluster)",
        "documentation_url": "",
        "is_bookable": False,
    }


def session_shape(session: SessionRecord, note: SessionNote | None, *, waiting: int,
                  finished: int) -> dict[str, Any]:
    message = None
    if session.reason is not None:
        message = session.reason.value + (f": {session.message}" if session.message else "")
    updated = max(t for t in (session.created_at, session.started_at, session.terminated_at,
                              session.last_job_at) if t is not None)
    return _present({
        "id": session.id,
        "name": session.name,
        "platform_id": platform_id(session.platform),
        "created_at": rfc3339(session.created_at),
        "started_at": rfc3339(session.started_at),
        "updated_at": rfc3339(updated),
        "terminated_at": rfc3339(session.terminated_at),
        "max_idle_duration": duration(session.max_idle_duration_s),
        "max_duration": duration(session.max_duration_s),
        "waiting_job_count": waiting,
        "finished_job_count": finished,
        "status": SessionStatus(session.status).value,
        "project_id": session.project or "",
        "tags": list(note.tags) if note else [],
        "deduplication_id": session.deduplication_id or "",
        "origin_type": "customer",
        "progress_message": message,
        "model_id": note.model_id if note else None,
        "parameters": note.parameters if note else None,
    })


def job_status(jobs: Iterable[QJobRecord]) -> str:
    """One Scaleway job from qsrv's jobs (one per circuit): running while any runs, completed
    when all are done, error when any failed or timed out, cancelled when any was cancelled,
    waiting otherwise."""
    statuses = {QStatus(job.status) for job in jobs}
    if not statuses:
        return "waiting"
    if QStatus.RUNNING in statuses:
        return "running"
    if statuses <= {QStatus.DONE}:
        return "completed"
    if not all(s.terminal for s in statuses):
        return "waiting" if QStatus.DONE not in statuses else "running"
    if statuses & {QStatus.ERROR, QStatus.TIMED_OUT}:
        return "error"
    return "cancelled"


def job_shape(job_id: str, session_id: str, jobs: tuple[QJobRecord, ...],
              note: JobNote | None) -> dict[str, Any]:
    status = job_status(jobs)
    created = min(j.created_at for j in jobs)
    starts = [j.started_at for j in jobs if j.started_at is not None]
    ends = [j.ended_at for j in jobs if j.ended_at is not None]
    started = min(starts) if starts else None
    ended = max(ends) if ends and status in ("completed", "error", "cancelled") else None
    updated = max([created, *starts, *ends])
    errors = [e for j in jobs for e in j.errors]
    if status == "error" and not errors:
        errors = [f"job {j.id} ended {QStatus(j.status).value}" for j in jobs
                  if QStatus(j.status) in (QStatus.ERROR, QStatus.TIMED_OUT)]
    return _present({
        "id": job_id,
        "name": note.name if note else "",
        "tags": list(note.tags) if note else [],
        "session_id": session_id,
        "created_at": rfc3339(created),
        "started_at": rfc3339(started),
        "updated_at": rfc3339(updated),
        "status": status,
        "progress_message": "; ".join(errors) if errors else None,
        "job_duration": duration(round(ended - started, 6))
        if ended is not None and started is not None else None,
        "model_id": note.model_id if note else None,
        "parameters": note.parameters if note else None,
    })


def model_shape(model: ModelRecord) -> dict[str, Any]:
    return _present({
        "id": model.id,
        "created_at": rfc3339(model.created_at),
        "project_id": model.project or "",
    })
