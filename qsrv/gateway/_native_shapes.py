"""The shapes of the native door's quantum routes: records rendered as JSON, and requests
(bodies, filters, pages) parsed into the service's types, each mistake an InvalidRequestError
naming the field.

Shapes: a program is ``{"kind": ..., "data": ...}`` (``qsrv.quantum.engines.Program``); a job
to submit is ``{"shots": n, "variables": {...}, "program": <program>|null, "seed": n|null}``;
times are ISO 8601 (UTC); a listing is ``{"<things>": [...], "total", "offset", "limit",
"snapshot"}``. Filters come as query parameters (a list-valued one repeated or
comma-separated) or as a JSON object in a body, with the names of ``JobFilters`` /
``BatchFilters``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from qsrv.gateway._errors import InvalidRequestError
from qsrv.gateway._models import isoformat
from qsrv.gateway._quantum import (
    BatchFilters,
    BatchRecord,
    JobFilters,
    JobSpec,
    Page,
    Pagination,
    QJobRecord,
    QStatus,
    SessionRecord,
)
from qsrv.gateway._web import float_query, pagination, timestamp

__all__ = [
    "batch_filters",
    "batch_json",
    "body_filters",
    "duration_field",
    "job_filters",
    "job_json",
    "job_spec",
    "job_specs",
    "list_field",
    "page_json",
    "pagination_of",
    "plain",
    "program_field",
    "program_json",
    "query_filters",
    "session_json",
    "status_words",
    "tags_field",
    "text_field",
]

_MAX_JOBS = 10_000  # jobs in one request


# -- rendering --------------------------------------------------------------------------------


def _time(value: float | None) -> str | None:
    return None if value is None else isoformat(value)


def plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        return [plain(v) for v in value]
    return value


def program_json(program: Any) -> dict[str, Any]:
    return {"kind": program.kind, "data": program.data}


def session_json(s: SessionRecord) -> dict[str, Any]:
    deadline = s.deadline()
    return {
        "id": s.id, "platform": s.platform, "deduplication_id": s.deduplication_id,
        "name": s.name, "project": s.project, "status": str(s.status),
        "reason": None if s.reason is None else str(s.reason), "message": s.message,
        "max_duration_s": s.max_duration_s, "max_idle_duration_s": s.max_idle_duration_s,
        "created_at": _time(s.created_at), "started_at": _time(s.started_at),
        "terminated_at": _time(s.terminated_at), "last_job_at": _time(s.last_job_at),
        "deadline": _time(deadline), "reservation_id": s.reservation_id,
    }


def job_json(j: QJobRecord) -> dict[str, Any]:
    return {
        "id": j.id, "batch_id": j.batch_id, "session_id": j.session_id, "seq": j.seq,
        "platform": j.platform, "project": j.project, "status": str(j.status),
        "shots": j.shots, "variables": plain(j.variables), "seed": j.seed,
        "program_kind": j.program.kind,
        "created_at": _time(j.created_at), "started_at": _time(j.started_at),
        "ended_at": _time(j.ended_at), "errors": list(j.errors), "parent_id": j.parent_id,
        "has_result": j.has_result,
    }


def batch_json(b: BatchRecord, *, program: bool = True) -> dict[str, Any]:
    out = {
        "id": b.id, "session_id": b.session_id, "platform": b.platform, "project": b.project,
        "status": str(b.status), "open": b.open, "parent_id": b.parent_id,
        "tags": list(b.tags), "configuration": plain(b.configuration),
        "created_at": _time(b.created_at), "updated_at": _time(b.updated_at),
        "ended_at": _time(b.ended_at), "timeout_s": b.timeout_s,
        "jobs": [job_json(j) for j in b.jobs],
    }
    if program:
        out["program"] = program_json(b.program)
    return out


def page_json(name: str, page: Page[Any], render: Callable[[Any], Any]) -> dict[str, Any]:
    return {name: [render(r) for r in page.results], "total": page.total,
            "offset": page.offset, "limit": page.limit, "snapshot": page.snapshot}


# -- parsing ----------------------------------------------------------------------------------


def text_field(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise InvalidRequestError(f"'{name}' must be a string" +
                                  (" (required)" if required else " or null"))
    return value


def _int(value: Any, name: str, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"'{name}' must be an integer")
    return value


def duration_field(body: Mapping[str, Any], name: str, default: str) -> str | float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRequestError(f"'{name}' must be a duration such as '30m' or 3600")
    return value


def program_field(value: Any, name: str = "program") -> Any:
    """A program object from its JSON (``{"kind", "data"}``)."""
    if not isinstance(value, Mapping) or set(value) - {"kind", "data"} or \
            not isinstance(value.get("kind"), str) or not isinstance(value.get("data"), str):
        raise InvalidRequestError(f"'{name}' must be an object {{\"kind\": str, \"data\": str}}")
    from qsrv.quantum.engines import Program

    return Program(kind=value["kind"], data=value["data"])


def job_spec(value: Any, where: str) -> JobSpec:
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{where} must be an object with 'shots' and 'variables'")
    unknown = set(value) - {"shots", "variables", "program", "seed"}
    if unknown:
        raise InvalidRequestError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    shots = _int(value.get("shots"), f"{where}.shots", allow_none=False)
    assert shots is not None
    variables = value.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise InvalidRequestError(f"{where}.variables must be an object")
    program = value.get("program")
    return JobSpec(shots=shots, variables=dict(variables),
                   program=None if program is None else program_field(program, f"{where}.program"),
                   seed=_int(value.get("seed"), f"{where}.seed"))


def job_specs(value: Any) -> list[JobSpec]:
    if not isinstance(value, list):
        raise InvalidRequestError("'jobs' must be a list of jobs")
    if len(value) > _MAX_JOBS:
        raise InvalidRequestError(f"at most {_MAX_JOBS} jobs in one request")
    return [job_spec(v, f"jobs[{i}]") for i, v in enumerate(value)]


def tags_field(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidRequestError("'tags' must be a list of strings")
    return tuple(value)


def status_words(words: list[str], kind: type[enum.Enum], upper: bool) -> list[Any]:
    out = []
    for word in words:
        try:
            out.append(kind(word.upper() if upper else word.lower()))
        except ValueError:
            names = ", ".join(str(m.value) for m in kind)
            raise InvalidRequestError(f"unknown status {word!r}; one of {names}") from None
    return out


def list_field(raw: Any, name: str) -> list[str] | None:
    """A list-valued filter from a query (repeated / comma-separated) or a JSON value."""
    if raw is None:
        return None
    items = raw if isinstance(raw, list) else [raw]
    words: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidRequestError(f"filter '{name}' must be a string or a list of strings")
        words += [w.strip() for w in item.split(",") if w.strip()]
    return words or None


def _date(raw: Any, name: str) -> float | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        raise InvalidRequestError(f"filter '{name}' must be a time")
    if isinstance(raw, int | float):
        return float(raw)
    if not isinstance(raw, str):
        raise InvalidRequestError(f"filter '{name}' must be a time (ISO 8601 or epoch seconds)")
    return timestamp(raw)


def _flag(raw: Any, name: str) -> bool | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "false", "0", "no"):
        return raw.lower() in ("true", "1", "yes")
    raise InvalidRequestError(f"filter '{name}' must be true or false")


def _count(raw: Any, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            raise InvalidRequestError(f"filter '{name}' must be an integer") from None
    return _int(raw, name)


_JOB_FILTERS = frozenset({"id", "batch_id", "session_id", "status", "start_date", "end_date",
                          "min_shots", "max_shots", "platform", "project", "errors"})
_BATCH_FILTERS = frozenset({"id", "session_id", "status", "start_date", "end_date", "platform",
                            "project", "open", "tag", "parent_id"})


def job_filters(source: Mapping[str, Any]) -> JobFilters:
    unknown = set(source) - _JOB_FILTERS
    if unknown:
        raise InvalidRequestError(f"unknown filter(s) {', '.join(sorted(unknown))}")
    status = list_field(source.get("status"), "status")
    return JobFilters(
        id=list_field(source.get("id"), "id"),
        batch_id=list_field(source.get("batch_id"), "batch_id"),
        session_id=list_field(source.get("session_id"), "session_id"),
        status=None if status is None else status_words(status, QStatus, upper=True),
        start_date=_date(source.get("start_date"), "start_date"),
        end_date=_date(source.get("end_date"), "end_date"),
        min_shots=_count(source.get("min_shots"), "min_shots"),
        max_shots=_count(source.get("max_shots"), "max_shots"),
        platform=list_field(source.get("platform"), "platform"),
        project=list_field(source.get("project"), "project"),
        errors=_flag(source.get("errors"), "errors"),
    )


def batch_filters(source: Mapping[str, Any]) -> BatchFilters:
    unknown = set(source) - _BATCH_FILTERS
    if unknown:
        raise InvalidRequestError(f"unknown filter(s) {', '.join(sorted(unknown))}")
    status = list_field(source.get("status"), "status")
    tag = list_field(source.get("tag"), "tag")
    parent = list_field(source.get("parent_id"), "parent_id")
    return BatchFilters(
        id=list_field(source.get("id"), "id"),
        session_id=list_field(source.get("session_id"), "session_id"),
        status=None if status is None else status_words(status, QStatus, upper=True),
        start_date=_date(source.get("start_date"), "start_date"),
        end_date=_date(source.get("end_date"), "end_date"),
        platform=list_field(source.get("platform"), "platform"),
        project=list_field(source.get("project"), "project"),
        open=_flag(source.get("open"), "open"),
        tag=tag[0] if tag else None,
        parent_id=parent[0] if parent else None,
    )


_PAGING = frozenset({"offset", "limit", "snapshot", "timeout"})


def query_filters(request: web.Request) -> dict[str, Any]:
    """The query's filters: a repeated parameter as a list."""
    source: dict[str, Any] = {}
    for key in request.query:
        if key in _PAGING or key in source:
            continue
        values = request.query.getall(key)
        source[key] = values if len(values) > 1 else values[0]
    return source


def pagination_of(request: web.Request) -> Pagination:
    offset, limit = pagination(request, 100)
    snapshot = float_query(request, "snapshot", None)
    return Pagination(offset=offset, limit=limit,
                      snapshot=None if snapshot is None else int(snapshot))


def body_filters(body: Mapping[str, Any]) -> JobFilters | None:
    filters = body.get("filters")
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise InvalidRequestError("'filters' must be an object")
    return job_filters(filters)
