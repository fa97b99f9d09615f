"""The shapes pasqal-cloud parses: JSend envelopes, batches, jobs, workloads, dates.

Every answer is ``{"status": "success", "code": 200, "message": "OK.", "data": ...}``; a
listing adds ``"pagination": {"total", "offset", "end"}`` (the SDK asks for the next page at
``end`` while ``end < total``). An error is ``{"status": "fail", "code": N, "message": text,
"data": {"description": text}}``: the SDK's exceptions show ``code: description``.

Dates are ISO 8601 in UTC with their offset (``2026-11-30T21:14:16.123456+00:00``). Ids are
the service's uuid4 strings; ``user_id`` is the qsrv user's number as a string; a record
without a project has ``project_id`` "" (the SDK's models need a string).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from qsrv.gateway._quantum import BatchRecord, QJobRecord, QStatus

__all__ = [
    "batch_shape",
    "batch_status",
    "counts_per_status",
    "error_body",
    "iso",
    "job_shape",
    "job_status",
    "jsend",
    "jsend_page",
    "render_error",
    "sdk_counts",
    "status_shape",
    "workload_shape",
]

# The SDK's JobStatus has no TIMED_OUT: a job that never ran because its batch timed out is
# shown as CANCELED (with the reason in its errors).
_JOB_WORDS = {QStatus.TIMED_OUT: "CANCELED"}


def iso(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat()


def jsend(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        {"status": "success", "code": status, "message": "OK.", "data": data}, status=status)


def jsend_page(data: list[Any], total: int, offset: int) -> web.Response:
    return web.json_response({
        "status": "success", "code": 200, "message": "OK.", "data": data,
        "pagination": {"total": total, "offset": offset, "end": offset + len(data)},
    })


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"status": "fail" if status < 500 else "error", "code": status,
            "message": message, "data": {"description": message}}


def render_error(status: int, kind: str, message: str) -> web.Response:
    """The door's error renderer (``_web.door(render=...)``)."""
    return web.json_response(error_body(status, message), status=status)


def job_status(status: QStatus | str) -> str:
    return _JOB_WORDS.get(QStatus(status), str(status))


def batch_status(status: QStatus | str) -> str:
    return str(QStatus(status))


def _updated(job: QJobRecord) -> float:
    return max(t for t in (job.created_at, job.started_at, job.ended_at) if t is not None)


def job_shape(job: QJobRecord, *, batch_program: str | None = None,
              with_sequence: bool = False) -> dict[str, Any]:
    """A job as ``pasqal_cloud.job.Job`` reads it. ``sequence`` (the job's own sequence,
    None when it runs its batch's) is present only ``with_sequence``: the SDK then knows it
    (``Batch.retry`` resends it), else it asks for it when read."""
    errors = list(job.errors)
    if job.status == QStatus.TIMED_OUT and not errors:
        errors = ["its batch timed out before it ran"]
    shape: dict[str, Any] = {
        "id": job.id,
        "batch_id": job.batch_id or "",
        "project_id": job.project or "",
        "user_id": str(job.user_id),
        "runs": job.shots,
        "status": job_status(job.status),
        "created_at": iso(job.created_at),
        "updated_at": iso(_updated(job)),
        "start_timestamp": iso(job.started_at),
        "end_timestamp": iso(job.ended_at),
        "errors": errors,
        "variables": dict(job.variables),
        "parent_id": job.parent_id,
    }
    if with_sequence:
        own = job.program.data if job.program.data != batch_program else None
        shape["sequence"] = own
    return shape


def counts_per_status(jobs: Iterable[QJobRecord]) -> dict[str, int]:
    return dict(Counter(job_status(job.status) for job in jobs))


def sdk_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The service's per-status job counts in the SDK's status words (TIMED_OUT jobs count
    as CANCELED)."""
    words: Counter[str] = Counter()
    for status, n in counts.items():
        words[job_status(status)] += n
    return dict(words)


def batch_shape(batch: BatchRecord, device_type: str) -> dict[str, Any]:
    """A batch as ``pasqal_cloud.batch.Batch`` reads it, its jobs in order, each with its own
    sequence (None when it runs the batch's)."""
    program = batch.program.data
    started = [j.started_at for j in batch.jobs if j.started_at is not None]
    return {
        "id": batch.id,
        "open": batch.open,
        "complete": not batch.open,
        "status": batch_status(batch.status),
        "created_at": iso(batch.created_at),
        "updated_at": iso(batch.updated_at),
        "start_datetime": iso(min(started)) if started else None,
        "end_datetime": iso(batch.ended_at),
        "device_type": device_type,
        "device_status": None,
        "project_id": batch.project or "",
        "user_id": str(batch.user_id),
        "parent_id": batch.parent_id,
        "webhook": None,
        "configuration": dict(batch.configuration) or None,
        "backend_configuration": None,
        "tags": list(batch.tags),
        "sequence_builder": program,
        "jobs_count": len(batch.jobs),
        "jobs_count_per_status": counts_per_status(batch.jobs),
        "jobs": [job_shape(j, batch_program=program, with_sequence=True) for j in batch.jobs],
    }


def status_shape(batch: BatchRecord, counts: Mapping[str, int]) -> dict[str, Any]:
    """What the SDK polls (``GET /api/v1/batches/{id}/status``): the batch's status and its
    jobs' ``counts`` per status (the service's, kept as jobs change)."""
    return {"id": batch.id, "status": batch_status(batch.status),
            "jobs_count_per_status": sdk_counts(counts)}


def workload_shape(batch: BatchRecord, workload: dict[str, Any],
                   result: dict[str, Any] | None) -> dict[str, Any]:
    """A workload (a one-job batch made by ``POST /api/v1/workloads``) as
    ``pasqal_cloud.workload.Workload`` reads it; ``result`` inline (no link to follow)."""
    job = batch.jobs[0] if batch.jobs else None
    config: dict[str, Any] = {"sequence": batch.program.data}
    if job is not None:
        config.update(runs=job.shots, variables=dict(job.variables))
        if job.seed is not None:
            config["seed"] = job.seed
    return {
        "id": batch.id,
        "project_id": batch.project or "",
        "status": batch_status(batch.status),
        "backend": workload.get("backend", ""),
        "workload_type": workload.get("workload_type", ""),
        "config": config,
        "created_at": iso(batch.created_at),
        "updated_at": iso(batch.updated_at),
        "start_timestamp": iso(job.started_at if job else None),
        "end_timestamp": iso(batch.ended_at),
        "errors": list(job.errors) if job else [],
        "result_link": None,
        "result": result,
    }
