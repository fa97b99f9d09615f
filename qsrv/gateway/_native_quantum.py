"""The quantum service's routes of the ``/v1`` door: platforms, sessions, batches and quantum
jobs, over ``GatewayService.quantum``.

Shapes (JSON bodies and answers, filters, pages) are ``_native_shapes``'s; listings are
newest first (pass ``snapshot`` back for a listing that stays stable while others insert).

Waits (``.../wait?timeout=``) are long-polls: the request is held until the service's event
for that object fires (terminal job or batch, stopped session) or the timeout (at most 60 s)
passes, and answers the object as it then is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from qsrv.gateway._errors import InvalidRequestError
from qsrv.gateway._native_shapes import (
    batch_filters,
    batch_json,
    body_filters,
    duration_field,
    job_filters,
    job_json,
    job_spec,
    job_specs,
    list_field,
    page_json,
    pagination_of,
    plain,
    program_field,
    query_filters,
    session_json,
    status_words,
    tags_field,
    text_field,
)
from qsrv.gateway._openapi import errors, json_content, path_param, query, ref
from qsrv.gateway._quantum import (
    QResult,
    QStatus,
    QuantumService,
    SessionFilters,
    SessionStatus,
)
from qsrv.gateway._web import (
    Handler,
    Route,
    current_user,
    json_body,
    no_body,
    service_of,
    timeout_query,
)

if TYPE_CHECKING:
    from qsrv.gateway._models import User

__all__ = ["QUANTUM_ROUTES", "QUANTUM_SCHEMAS"]

MAX_WAIT_S = 60.0
_R = TypeVar("_R")
_Q = QuantumService  # the route table's shorthand


def _quantum(request: web.Request) -> QuantumService:
    return service_of(request).quantum


# Most routes act on one of the user's objects named in the path (``{key}``) and answer its
# record, shaped: a read, an action without a body, or a long-poll.


def _read(method: Callable[[QuantumService, User, str], _R], key: str,
          shape: Callable[[_R], Any]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        record = method(_quantum(request), current_user(request), request.match_info[key])
        return web.json_response(shape(record))
    return handler


def _act(method: Callable[[QuantumService, User, str], Awaitable[_R]], key: str,
         shape: Callable[[_R], Any], status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await no_body(request)
        record = await method(_quantum(request), current_user(request),
                              request.match_info[key])
        return web.json_response(shape(record), status=status)
    return handler


def _wait(method: Callable[[QuantumService, User, str, float], Awaitable[_R]], key: str,
          shape: Callable[[_R], Any]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        record = await method(_quantum(request), current_user(request),
                              request.match_info[key], timeout_query(request, 30.0, MAX_WAIT_S))
        return web.json_response(shape(record))
    return handler


def _result_json(result: QResult) -> dict[str, Any]:
    return {"counts": dict(result.counts), "native": result.native}


# -- platforms --------------------------------------------------------------------------------


async def _platforms(request: web.Request) -> web.Response:
    platforms = await _quantum(request).platforms()
    return web.json_response({"platforms": [plain(p) for p in platforms]})


async def _platform(request: web.Request) -> web.Response:
    platform = await _quantum(request).platform(request.match_info["name"])
    return web.json_response(plain(platform))


# -- sessions ---------------------------------------------------------------------------------


async def _open_session(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"platform", "deduplication_id", "max_duration",
                           "max_idle_duration", "name", "project"}
    if unknown:
        raise InvalidRequestError(f"unknown field(s) {', '.join(sorted(unknown))}")
    platform = text_field(body, "platform", required=True)
    assert platform is not None
    session, created = await _quantum(request).open_session(
        current_user(request), platform,
        deduplication_id=text_field(body, "deduplication_id"),
        max_duration=duration_field(body, "max_duration", "1h"),
        max_idle_duration=duration_field(body, "max_idle_duration", "20m"),
        name=text_field(body, "name"), project=text_field(body, "project"))
    return web.json_response({"session": session_json(session), "created": created},
                             status=201 if created else 200)


async def _sessions(request: web.Request) -> web.Response:
    source = query_filters(request)
    unknown = set(source) - {"status", "platform", "project", "id", "deduplication_id"}
    if unknown:
        raise InvalidRequestError(f"unknown filter(s) {', '.join(sorted(unknown))}")
    status = list_field(source.get("status"), "status")
    dedup = list_field(source.get("deduplication_id"), "deduplication_id")
    filters = SessionFilters(
        id=list_field(source.get("id"), "id"),
        status=None if status is None else status_words(status, SessionStatus, upper=False),
        platform=list_field(source.get("platform"), "platform"),
        project=list_field(source.get("project"), "project"),
        deduplication_id=dedup[0] if dedup else None)
    page = _quantum(request).sessions(current_user(request), filters=filters,
                                      page=pagination_of(request))
    return web.json_response(page_json("sessions", page, session_json))


async def _delete_session(request: web.Request) -> web.Response:
    await no_body(request)
    await _quantum(request).delete_session(current_user(request),
                                           request.match_info["session_id"])
    return web.Response(status=204)


async def _wait_session(request: web.Request) -> web.Response:
    words = list_field(query_filters(request).get("status"), "status")
    statuses = (status_words(words, SessionStatus, upper=False) if words
                else [SessionStatus.STOPPED])
    session = await _quantum(request).wait_session(
        current_user(request), request.match_info["session_id"],
        timeout_query(request, 30.0, MAX_WAIT_S), statuses=statuses)
    return web.json_response(session_json(session))


async def _session_job(request: web.Request) -> web.Response:
    spec = job_spec(await json_body(request), "the job")
    job = await _quantum(request).submit(current_user(request),
                                         request.match_info["session_id"], spec)
    return web.json_response(job_json(job), status=201)


async def _session_jobs(request: web.Request) -> web.Response:
    user = current_user(request)
    session = _quantum(request).session(user, request.match_info["session_id"])
    filters = dataclasses.replace(job_filters(query_filters(request)), session_id=session.id)
    page = _quantum(request).jobs(user, filters, pagination_of(request))
    return web.json_response(page_json("jobs", page, job_json))


# -- batches ----------------------------------------------------------------------------------


async def _create_batch(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"program", "jobs", "platform", "session_id", "open",
                           "idempotency_key", "tags", "project", "configuration"}
    if unknown:
        raise InvalidRequestError(f"unknown field(s) {', '.join(sorted(unknown))}")
    is_open = body.get("open", False)
    if not isinstance(is_open, bool):
        raise InvalidRequestError("'open' must be true or false")
    configuration = body.get("configuration")
    if configuration is not None and not isinstance(configuration, dict):
        raise InvalidRequestError("'configuration' must be an object")
    batch = await _quantum(request).create_batch(
        current_user(request), program_field(body.get("program")),
        job_specs(body.get("jobs", [])), platform=text_field(body, "platform"),
        session_id=text_field(body, "session_id"), open=is_open,
        idempotency_key=text_field(body, "idempotency_key"), tags=tags_field(body.get("tags")),
        project=text_field(body, "project"), configuration=configuration)
    return web.json_response(batch_json(batch), status=201)


async def _batches(request: web.Request) -> web.Response:
    page = _quantum(request).batches(current_user(request),
                                     batch_filters(query_filters(request)), pagination_of(request))
    return web.json_response(page_json("batches", page,
                                        lambda b: batch_json(b, program=False)))


async def _add_jobs(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"jobs", "idempotency_key"}
    if unknown:
        raise InvalidRequestError(f"unknown field(s) {', '.join(sorted(unknown))}")
    batch = await _quantum(request).add_jobs(
        current_user(request), request.match_info["batch_id"], job_specs(body.get("jobs")),
        idempotency_key=text_field(body, "idempotency_key"))
    return web.json_response(batch_json(batch))


async def _set_tags(request: web.Request) -> web.Response:
    body = await json_body(request)
    batch = await _quantum(request).set_tags(current_user(request),
                                             request.match_info["batch_id"],
                                             tags_field(body.get("tags", [])))
    return web.json_response(batch_json(batch))


async def _rebatch(request: web.Request) -> web.Response:
    body = await json_body(request, empty=True)
    if set(body) - {"filters"}:
        raise InvalidRequestError("the body may only hold 'filters'")
    batch = await _quantum(request).rebatch(current_user(request),
                                            request.match_info["batch_id"], body_filters(body))
    return web.json_response(batch_json(batch), status=201)


# -- quantum jobs -----------------------------------------------------------------------------


async def _jobs(request: web.Request) -> web.Response:
    page = _quantum(request).jobs(current_user(request), job_filters(query_filters(request)),
                                  pagination_of(request))
    return web.json_response(page_json("jobs", page, job_json))


async def _cancel_jobs(request: web.Request) -> web.Response:
    body = await json_body(request)
    if set(body) - {"filters"}:
        raise InvalidRequestError("the body may only hold 'filters'")
    filters = body_filters(body)
    if filters is None:
        raise InvalidRequestError("'filters' (an object) is required")
    jobs = await _quantum(request).cancel_jobs(current_user(request), filters)
    return web.json_response({"jobs": [job_json(j) for j in jobs]})


# -- the table --------------------------------------------------------------------------------

_SESSION_ID = path_param("session_id", "The session's id")
_BATCH_ID = path_param("batch_id", "The batch's id")
_JOB_ID = path_param("job_id", "The quantum job's id")
_TIMEOUT = query("timeout", {"type": "number", "minimum": 0, "maximum": 60},
                 "Seconds to hold the request at most (capped at 60)")
_PAGING_PARAMS = [
    query("offset", {"type": "integer", "default": 0}, "Skip this many"),
    query("limit", {"type": "integer", "default": 100, "maximum": 100}, "Page size"),
    query("snapshot", {"type": "integer"}, "A previous page's snapshot: a stable listing"),
]
_LIST = {"type": "array", "items": {"type": "string"}}
_JOB_FILTER_PARAMS = [
    query("id", _LIST, "Only these ids"), query("batch_id", _LIST, "Of these batches"),
    query("session_id", _LIST, "Of these sessions"),
    query("status", _LIST, "PENDING, RUNNING, DONE, ERROR, CANCELED, TIMED_OUT"),
    query("start_date", {"type": "string"}, "Created at or after (ISO 8601 or epoch s)"),
    query("end_date", {"type": "string"}, "Created at or before (ISO 8601 or epoch s)"),
    query("min_shots", {"type": "integer"}, "At least this many shots"),
    query("max_shots", {"type": "integer"}, "At most this many shots"),
    query("platform", _LIST, "On these platforms"), query("project", _LIST, "Of these projects"),
    query("errors", {"type": "boolean"}, "With (true) or without (false) errors"),
]
_BATCH_FILTER_PARAMS = [
    query("id", _LIST, "Only these ids"), query("session_id", _LIST, "Of these sessions"),
    query("status", _LIST, "PENDING, RUNNING, DONE, ERROR, CANCELED, TIMED_OUT"),
    query("start_date", {"type": "string"}, "Created at or after"),
    query("end_date", {"type": "string"}, "Created at or before"),
    query("platform", _LIST, "On these platforms"), query("project", _LIST, "Of these projects"),
    query("open", {"type": "boolean"}, "Open (true) or closed (false)"),
    query("tag", {"type": "string"}, "Carrying this tag"),
    query("parent_id", {"type": "string"}, "Rebatched from this batch"),
]
_SESSION = json_content(ref("QuantumSession"), "The session")
_BATCH = json_content(ref("Batch"), "The batch")
_QJOB = json_content(ref("QuantumJob"), "The quantum job")
_TIME = {"type": "string", "format": "date-time", "nullable": True}
_STATUS = {"type": "string", "enum": [s.value for s in QStatus]}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _listing(name: str, item: str) -> dict[str, Any]:
    return json_content({"type": "object", "properties": {
        name: {"type": "array", "items": ref(item)}, "total": {"type": "integer"},
        "offset": {"type": "integer"}, "limit": {"type": "integer"},
        "snapshot": {"type": "integer"}}}, f"A page of {name}, newest first")


QUANTUM_SCHEMAS: dict[str, Any] = {
    "QuantumProgram": {"type": "object", "required": ["kind", "data"], "properties": {
        "kind": {"type": "string", "description": "qiskit.qasm2, qiskit.qasm3, qiskit.qpy, "
                 "pulser, perceval"},
        "data": {"type": "string", "description": "The program's text (qpy: base64)"}}},
    "JobSpec": {"type": "object", "required": ["shots"], "properties": {
        "shots": {"type": "integer"}, "variables": {"type": "object"},
        "program": ref("QuantumProgram"), "seed": {"type": "integer", "nullable": True}}},
    "JobFilters": {"type": "object", "properties": {
        "id": _LIST, "batch_id": _LIST, "session_id": _LIST, "status": _LIST,
        "start_date": {"type": "string"}, "end_date": {"type": "string"},
        "min_shots": {"type": "integer"}, "max_shots": {"type": "integer"},
        "platform": _LIST, "project": _LIST, "errors": {"type": "boolean"}}},
    "Platform": {"type": "object", "properties": {
        "name": {"type": "string"}, "engine": {"type": "string"}, "method": {"type": "string"},
        "device": {"type": "string"}, "version": {"type": "string"},
        "max_qubits": {"type": "integer"}, "max_shots": {"type": "integer"},
        "max_circuits": {"type": "integer"}, "hardware": {"type": "object"},
        "availability": {"type": "string", "enum": ["available", "busy", "unavailable"]},
        "target": {"type": "object"}, "workers": {"type": "integer"},
        "device_specs": {"type": "string", "nullable": True}}},
    "QuantumSession": {"type": "object", "properties": {
        "id": {"type": "string"}, "platform": {"type": "string"},
        "deduplication_id": {"type": "string", "nullable": True}, "name": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in SessionStatus]},
        "reason": {"type": "string", "nullable": True},
        "message": {"type": "string", "nullable": True},
        "max_duration_s": {"type": "number"}, "max_idle_duration_s": {"type": "number"},
        "created_at": _TIME, "started_at": _TIME, "terminated_at": _TIME,
        "last_job_at": _TIME, "deadline": _TIME}},
    "QuantumJob": {"type": "object", "properties": {
        "id": {"type": "string"}, "batch_id": {"type": "string", "nullable": True},
        "session_id": {"type": "string"}, "seq": {"type": "integer"}, "status": _STATUS,
        "shots": {"type": "integer"}, "variables": {"type": "object"},
        "created_at": _TIME, "started_at": _TIME, "ended_at": _TIME,
        "errors": {"type": "array", "items": {"type": "string"}},
        "parent_id": {"type": "string", "nullable": True}, "has_result": {"type": "boolean"}}},
    "Batch": {"type": "object", "properties": {
        "id": {"type": "string"}, "session_id": {"type": "string"},
        "platform": {"type": "string"}, "status": _STATUS, "open": {"type": "boolean"},
        "parent_id": {"type": "string", "nullable": True},
        "tags": {"type": "array", "items": {"type": "string"}},
        "program": ref("QuantumProgram"),
        "created_at": _TIME, "updated_at": _TIME, "ended_at": _TIME,
        "jobs": {"type": "array", "items": ref("QuantumJob")}}},
}

QUANTUM_ROUTES: tuple[Route, ...] = (
    Route("GET", "/platforms", _platforms, {
        "summary": "The platforms the cluster's workers offer, with specs and availability",
        "responses": {"200": json_content({"type": "object", "properties": {
            "platforms": {"type": "array", "items": ref("Platform")}}}, "Platforms"),
            **errors(401)}}),
    Route("GET", "/platforms/{name}", _platform, {
        "summary": "One platform", "parameters": [path_param("name", "The platform's name")],
        "responses": {"200": json_content(ref("Platform"), "The platform"),
                      **errors(401, 404)}}),
    Route("POST", "/sessions", _open_session, {
        "summary": "Get-or-create a session: a running or starting session of yours with the "
                   "same platform and deduplication id, else a new one (201)",
        "requestBody": _body({"type": "object", "required": ["platform"], "properties": {
            "platform": {"type": "string"},
            "deduplication_id": {"type": "string", "nullable": True},
            "max_duration": {"type": "string", "description": "'30m', '1h', seconds..."},
            "max_idle_duration": {"type": "string"}, "name": {"type": "string"},
            "project": {"type": "string"}}}),
        "responses": {"200": json_content({"type": "object", "properties": {
            "session": ref("QuantumSession"), "created": {"type": "boolean"}}},
            "The existing session"),
            "201": json_content({"type": "object", "properties": {
                "session": ref("QuantumSession"), "created": {"type": "boolean"}}},
                "A new session"), **errors(400, 401, 404, 413)}}),
    Route("GET", "/sessions", _sessions, {
        "summary": "Your sessions, newest first",
        "parameters": [query("status", _LIST, "starting, running, stopping, stopped"),
                       query("platform", _LIST, "On these platforms"),
                       query("deduplication_id", {"type": "string"}, "With this id"),
                       *_PAGING_PARAMS],
        "responses": {"200": _listing("sessions", "QuantumSession"), **errors(400, 401)}}),
    Route("GET", "/sessions/{session_id}", _read(_Q.session, "session_id", session_json), {
        "summary": "A session", "parameters": [_SESSION_ID],
        "responses": {"200": _SESSION, **errors(401, 404)}}),
    Route("DELETE", "/sessions/{session_id}", _delete_session, {
        "summary": "Terminate a session and forget it", "parameters": [_SESSION_ID],
        "responses": {"204": {"description": "Deleted"}, **errors(401, 404, 409)}}),
    Route("POST", "/sessions/{session_id}/terminate",
          _act(_Q.terminate_session, "session_id", session_json), {
        "summary": "End a session now (reason: terminated); its reservation is released",
        "parameters": [_SESSION_ID], "responses": {"200": _SESSION, **errors(401, 404)}}),
    Route("GET", "/sessions/{session_id}/wait", _wait_session, {
        "summary": "Long-poll: answers once the session reaches one of the statuses "
                   "(default stopped), or after timeout",
        "parameters": [_SESSION_ID, _TIMEOUT, query("status", _LIST, "The statuses awaited")],
        "responses": {"200": _SESSION, **errors(400, 401, 404)}}),
    Route("POST", "/sessions/{session_id}/jobs", _session_job, {
        "summary": "Run a job on the session (outside any batch)",
        "parameters": [_SESSION_ID], "requestBody": _body(ref("JobSpec")),
        "responses": {"201": _QJOB, **errors(400, 401, 404, 409, 413)}}),
    Route("GET", "/sessions/{session_id}/jobs", _session_jobs, {
        "summary": "The session's jobs, newest first",
        "parameters": [_SESSION_ID, *_JOB_FILTER_PARAMS, *_PAGING_PARAMS],
        "responses": {"200": _listing("jobs", "QuantumJob"), **errors(400, 401, 404)}}),
    Route("POST", "/batches", _create_batch, {
        "summary": "Create a batch of jobs of one program on a platform or a session",
        "requestBody": _body({"type": "object", "required": ["program"], "properties": {
            "program": ref("QuantumProgram"),
            "jobs": {"type": "array", "items": ref("JobSpec")},
            "platform": {"type": "string"}, "session_id": {"type": "string"},
            "open": {"type": "boolean"}, "idempotency_key": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "project": {"type": "string"}, "configuration": {"type": "object"}}}),
        "responses": {"201": _BATCH, **errors(400, 401, 404, 409, 413)}}),
    Route("GET", "/batches", _batches, {
        "summary": "Your batches, newest first (without their programs)",
        "parameters": [*_BATCH_FILTER_PARAMS, *_PAGING_PARAMS],
        "responses": {"200": _listing("batches", "Batch"), **errors(400, 401)}}),
    Route("GET", "/batches/{batch_id}", _read(_Q.batch, "batch_id", batch_json), {
        "summary": "A batch and its jobs, in order", "parameters": [_BATCH_ID],
        "responses": {"200": _BATCH, **errors(401, 404)}}),
    Route("POST", "/batches/{batch_id}/jobs", _add_jobs, {
        "summary": "Add jobs to an open batch", "parameters": [_BATCH_ID],
        "requestBody": _body({"type": "object", "required": ["jobs"], "properties": {
            "jobs": {"type": "array", "items": ref("JobSpec")},
            "idempotency_key": {"type": "string"}}}),
        "responses": {"200": _BATCH, **errors(400, 401, 404, 409, 413)}}),
    Route("POST", "/batches/{batch_id}/close", _act(_Q.close_batch, "batch_id", batch_json), {
        "summary": "Close an open batch: it is DONE once its jobs have ended",
        "parameters": [_BATCH_ID], "responses": {"200": _BATCH, **errors(401, 404, 409)}}),
    Route("POST", "/batches/{batch_id}/cancel", _act(_Q.cancel_batch, "batch_id", batch_json), {
        "summary": "Cancel a batch and its pending jobs", "parameters": [_BATCH_ID],
        "responses": {"200": _BATCH, **errors(401, 404, 409)}}),
    Route("PUT", "/batches/{batch_id}/tags", _set_tags, {
        "summary": "Replace a batch's tags", "parameters": [_BATCH_ID],
        "requestBody": _body({"type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string"}}}}),
        "responses": {"200": _BATCH, **errors(400, 401, 404)}}),
    Route("POST", "/batches/{batch_id}/rebatch", _rebatch, {
        "summary": "A new batch from a closed batch's jobs (those matching the filters), "
                   "its parent_id set", "parameters": [_BATCH_ID],
        "requestBody": _body({"type": "object", "properties": {
            "filters": ref("JobFilters")}}, required=False),
        "responses": {"201": _BATCH, **errors(400, 401, 404, 409)}}),
    Route("GET", "/batches/{batch_id}/wait", _wait(_Q.wait_batch, "batch_id", batch_json), {
        "summary": "Long-poll: answers once the batch is terminal, or after timeout",
        "parameters": [_BATCH_ID, _TIMEOUT],
        "responses": {"200": _BATCH, **errors(400, 401, 404)}}),
    Route("GET", "/quantum-jobs", _jobs, {
        "summary": "Your quantum jobs, newest first",
        "parameters": [*_JOB_FILTER_PARAMS, *_PAGING_PARAMS],
        "responses": {"200": _listing("jobs", "QuantumJob"), **errors(400, 401)}}),
    Route("POST", "/quantum-jobs/cancel", _cancel_jobs, {
        "summary": "Cancel every pending or running job matching the filters",
        "requestBody": _body({"type": "object", "required": ["filters"], "properties": {
            "filters": ref("JobFilters")}}),
        "responses": {"200": json_content({"type": "object", "properties": {
            "jobs": {"type": "array", "items": ref("QuantumJob")}}}, "The jobs cancelled"),
            **errors(400, 401)}}),
    Route("GET", "/quantum-jobs/{job_id}", _read(_Q.job, "job_id", job_json), {
        "summary": "A quantum job", "parameters": [_JOB_ID],
        "responses": {"200": _QJOB, **errors(401, 404)}}),
    Route("GET", "/quantum-jobs/{job_id}/result", _read(_Q.result, "job_id", _result_json), {
        "summary": "A DONE job's counts and the engine's own result (text)",
        "parameters": [_JOB_ID],
        "responses": {"200": json_content({"type": "object", "properties": {
            "counts": {"type": "object"}, "native": {"type": "string", "nullable": True}}},
            "The result"), **errors(401, 404, 409)}}),
    Route("POST", "/quantum-jobs/{job_id}/cancel", _act(_Q.cancel_job, "job_id", job_json), {
        "summary": "Cancel a job", "parameters": [_JOB_ID],
        "responses": {"200": _QJOB, **errors(401, 404, 409)}}),
    Route("POST", "/quantum-jobs/{job_id}/retry",
          _act(_Q.retry_job, "job_id", job_json, status=201), {
        "summary": "Run a job of an open batch again (a new job, parent_id set)",
        "parameters": [_JOB_ID], "responses": {"201": _QJOB, **errors(401, 404, 409)}}),
    Route("GET", "/quantum-jobs/{job_id}/wait", _wait(_Q.wait_job, "job_id", job_json), {
        "summary": "Long-poll: answers once the job is terminal, or after timeout",
        "parameters": [_JOB_ID, _TIMEOUT],
        "responses": {"200": _QJOB, **errors(400, 401, 404)}}),
)
