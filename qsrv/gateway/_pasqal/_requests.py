"""What pasqal-cloud sends, read into the service's terms.

Filters travel as query parameters (``requests`` repeats a key for a list: ``status=DONE&
status=ERROR``); dates as ISO 8601 (``datetime.isoformat()``, naive means UTC); booleans as
``True``/``False``; ``runs`` is the service's ``shots``. Jobs travel in JSON bodies as
``{"runs", "variables", "sequence"}`` (a job's own sequence), the batch's sequence in
``sequence_builder``. Whatever cannot be read is a 400 that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from qsrv.gateway._errors import InvalidRequestError
from qsrv.gateway._models import User
from qsrv.gateway._quantum import BatchFilters, JobFilters, JobSpec, Pagination, QStatus
from qsrv.gateway._web import int_query, timestamp
from qsrv.quantum.engines import Program

__all__ = [
    "NOTHING",
    "batch_filters",
    "job_filters",
    "job_specs",
    "page_params",
    "pulser_program",
]

_JOB_STATUSES = frozenset({"PENDING", "RUNNING", "DONE", "ERROR", "CANCELED"})
_BATCH_STATUSES = frozenset(s.value for s in QStatus)
# A filter value that matches no record (another user's id, a device type qsrv never ran).
NOTHING = "00000000-0000-0000-0000-000000000000"


def _many(request: web.Request, name: str) -> list[str] | None:
    values = [v for v in request.query.getall(name, []) if v != ""]
    return values or None


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    return None if raw in (None, "") else int_query(request, name, 0)


def _bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    word = raw.lower()
    if word in ("true", "1"):
        return True
    if word in ("false", "0"):
        return False
    raise InvalidRequestError(f"query parameter {name} must be true or false")


# Dates are shown to the microsecond: a bound read back from a shown date includes the record
# it was read from (the service's times are finer).
_SHOWN = 1e-6


def _date(request: web.Request, name: str, side: float) -> float | None:
    raw = request.query.get(name)
    return None if raw in (None, "") else timestamp(raw) + side * _SHOWN


def _statuses(request: web.Request, allowed: frozenset[str]) -> list[str] | None:
    values = _many(request, "status")
    for value in values or ():
        if value not in allowed:
            raise InvalidRequestError(
                f"unknown status {value!r}: use one of {', '.join(sorted(allowed))}")
    return values


def _own_user(request: web.Request, user: User) -> bool:
    """False when ``user_id`` filters on other users only (their records are not listed)."""
    wanted = _many(request, "user_id")
    return wanted is None or str(user.user_id) in wanted


def job_filters(request: web.Request, user: User, *,
                batch_id: str | None = None) -> JobFilters:
    """``JobFilters`` / ``RebatchFilters`` / ``CancelJobFilters`` of the SDK."""
    ids = _many(request, "id")
    if not _own_user(request, user):
        ids = [NOTHING]
    return JobFilters(
        id=ids,
        batch_id=batch_id if batch_id is not None else _many(request, "batch_id"),
        status=_statuses(request, _JOB_STATUSES),
        start_date=_date(request, "start_date", -1),
        end_date=_date(request, "end_date", +1),
        min_shots=_int(request, "min_runs"),
        max_shots=_int(request, "max_runs"),
        project=_many(request, "project_id"),
        errors=_bool(request, "errors"),
    )


def batch_filters(request: web.Request, user: User, platforms: list[str] | None) -> BatchFilters:
    """``BatchFilters`` of the SDK (``device_type`` already read into ``platforms``)."""
    if _many(request, "queue_priority"):
        raise InvalidRequestError(
            "queue_priority: qsrv has no queue priorities (batches run in the order they "
            "get a worker)")
    ids = _many(request, "id")
    if not _own_user(request, user):
        ids = [NOTHING]
    return BatchFilters(
        id=ids,
        status=_statuses(request, _BATCH_STATUSES),
        start_date=_date(request, "start_date", -1),
        end_date=_date(request, "end_date", +1),
        project=_many(request, "project_id"),
        platform=platforms,
        open=_bool(request, "open"),
        tag=request.query.get("tag") or None,
    )


def page_params(request: web.Request) -> Pagination:
    """``PaginationParams``: offset >= 0, 1 <= limit <= 100 (the service refuses others)."""
    offset = _int(request, "offset")
    limit = _int(request, "limit")
    return Pagination(offset=0 if offset is None else offset,
                      limit=100 if limit is None else limit)


def pulser_program(sequence: Any, where: str) -> Program:
    if not isinstance(sequence, str) or not sequence:
        raise InvalidRequestError(
            f"{where} must be a Pulser sequence's abstract representation "
            "(sequence.to_abstract_repr())")
    return Program(kind="pulser", data=sequence)


def job_specs(jobs: Any, seed: int | None) -> list[JobSpec]:
    """The SDK's ``CreateJob`` payloads as the service's job specs."""
    if not isinstance(jobs, list):
        raise InvalidRequestError("jobs must be a list of {runs, variables, sequence}")
    specs = []
    for index, job in enumerate(jobs):
        if not isinstance(job, Mapping):
            raise InvalidRequestError(f"job {index} must be an object")
        unknown = sorted(set(job) - {"runs", "variables", "sequence"})
        if unknown:
            raise InvalidRequestError(f"job {index}: unknown field(s) {', '.join(unknown)}")
        runs = job.get("runs")
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise InvalidRequestError(f"job {index}: runs must be a positive integer")
        variables = job.get("variables") or {}
        if not isinstance(variables, Mapping):
            raise InvalidRequestError(f"job {index}: variables must be an object")
        own = job.get("sequence")
        program = None if own is None else pulser_program(own, f"job {index}'s sequence")
        specs.append(JobSpec(shots=runs, variables=dict(variables), program=program,
                             seed=seed))
    return specs
